//! A synthetic CNAF flux, deterministic from a seed, shaped like the reference sample (persons
//! with their ressources, addresses, right states with motifs). For measuring the importer on
//! large files; the persons are fictional and their NIRs valid.

use std::io::Write;

/// splitmix64: a small deterministic generator (no dependency, same output for the same seed).
/// Also used by the tests' synthetic histories.
pub struct Sequence(pub u64);

impl Sequence {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with the given probability, in percent.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const NOMS: &[&str] =
    &["MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU", "LAURENT"];
const PRENOMS: &[&str] = &["CAMILLE", "LOUIS", "JADE", "GABRIEL", "LEA", "RAPHAEL", "EMMA", "ARTHUR", "CHLOE", "JULES"];

/// Writes a monthly flux of `foyers` households received by the Haute-Marne (CAF 521).
pub fn write_flux(out: &mut impl Write, foyers: u64, seed: u64) -> std::io::Result<()> {
    let mut random = Sequence(seed);
    writeln!(out, "<?xml version=\"1.0\" encoding=\"windows-1252\"?>")?;
    writeln!(out, "<Racine>")?;
    writeln!(
        out,
        "\t<IdentificationFlux><APPLIEME>CRI</APPLIEME><NUMVERSIONAPPLIEME>6200</NUMVERSIONAPPLIEME><TYPEFLUX>M</TYPEFLUX><NATFLUX>D</NATFLUX><DTCREAFLUX>2026-11-05</DTCREAFLUX><HEUCREAFLUX>01:18:36.0000</HEUCREAFLUX><DTREF>2026-10-31</DTREF></IdentificationFlux>"
    )?;
    for index in 0..foyers {
        let matricule = format!("{:07}", 1_000_000 + index);
        let state = [2, 2, 2, 2, 3, 4, 5, 0, 1, 6][random.below(10) as usize];
        writeln!(out, "\t<InfosFoyerRSA>")?;
        writeln!(
            out,
            "\t\t<IdentificationRSA><Organisme><FONORG>CAF</FONORG><NUMORG>521</NUMORG><MATRICULE>{matricule}00000000</MATRICULE></Organisme><Partenaire><TYPEPARTE>CG </TYPEPARTE><IDEPARTE>052</IDEPARTE></Partenaire><DemandeRSA><DTDEMRSA>2025-{:02}-{:02}</DTDEMRSA><NUMDEMRSA>{:011}</NUMDEMRSA></DemandeRSA></IdentificationRSA>",
            1 + random.below(12),
            1 + random.below(28),
            random.below(99_999_999_999)
        )?;
        let members = 1 + random.below(3);
        for member in 0..members {
            let role = if member == 0 {
                "DEM"
            } else if member == 1 {
                "CJT"
            } else {
                "ENF"
            };
            let sex = 1 + random.below(2);
            let year = if role == "ENF" { 10 + random.below(10) } else { 60 + random.below(40) };
            let month = 1 + random.below(12);
            let core = format!("{sex}{year:02}{month:02}52{:03}{:03}", 1 + random.below(500), 1 + random.below(998));
            writeln!(
                out,
                "\t\t<Personne><Identification><QUAL>{}</QUAL><NOM>{}</NOM><PRENOM>{}</PRENOM><DTNAI>19{year:02}-{month:02}-{:02}</DTNAI><TYPEDTNAI>N</TYPEDTNAI><NIR>{core}</NIR><TOPVALIEC>1</TOPVALIEC><SEXE>{sex}</SEXE></Identification>",
                if sex == 1 { "MR" } else { "MME" },
                NOMS[random.below(10) as usize],
                PRENOMS[random.below(10) as usize],
                1 + random.below(28)
            )?;
            writeln!(
                out,
                "\t\t\t<DossierCAF><TOPRESPDOS>{}</TOPRESPDOS><DDRATDOS>2007-05-15</DDRATDOS></DossierCAF><Prestations><NATPREST>RSA</NATPREST><ROLEPERS>{role}</ROLEPERS><TOPCHAPERS>1</TOPCHAPERS></Prestations>",
                u8::from(member == 0)
            )?;
            for month in 8..11 {
                writeln!(
                    out,
                    "\t\t\t<Ressources><RessourcesMensuelles><GeneraliteRessourcesMensuelles><MOISRESS>2026-{month:02}-01</MOISRESS><NBHEUMENTRA>000</NBHEUMENTRA></GeneraliteRessourcesMensuelles><DetailRessourcesMensuelles><NATRESS>001</NATRESS><MTNATRESSMEN>{:07}.00</MTNATRESSMEN></DetailRessourcesMensuelles></RessourcesMensuelles></Ressources>",
                    random.below(2000)
                )?;
            }
            writeln!(
                out,
                "\t\t\t<MontantCalculDroitRSAPersonne><TOPPERSDRODEVORSA>{}</TOPPERSDRODEVORSA></MontantCalculDroitRSAPersonne></Personne>",
                u8::from(role != "ENF" && random.below(4) > 0)
            )?;
        }
        writeln!(
            out,
            "\t\t<DonneesAdministratives><Adresse><TroncCommunAdresse><RGADR>01</RGADR><DTEMM>2024-0{}-15</DTEMM><PAYS>FRA</PAYS><TYPEADR>D</TYPEADR><ETATADR>CO</ETATADR></TroncCommunAdresse><AdresseDetailleeFrance><NUMVOIE>{}</NUMVOIE><LIBTYPEVOIE>RUE</LIBTYPEVOIE><NOMVOIE>DE LA GARE</NOMVOIE><NUMCOM>52121</NUMCOM><CODEPOS>52000</CODEPOS><NOMCOM>CHAUMONT</NOMCOM></AdresseDetailleeFrance></Adresse></DonneesAdministratives>",
            1 + random.below(9),
            1 + random.below(120)
        )?;
        let detail = match state {
            1 => "<Refus><DTREFURSA>2026-09-01</DTREFURSA><MOTIREFURSA>RSP</MOTIREFURSA></Refus>".to_owned(),
            3 => "<SuspensionDroit><MOTISUSDRORSA>06</MOTISUSDRORSA><DDSUSDRORSA>2026-09-01</DDSUSDRORSA></SuspensionDroit>".to_owned(),
            4 => format!("<SuspensionVersement><MOTISUSVERSRSA>{}</MOTISUSVERSRSA><DDSUSVERSRSA>2026-10-01</DDSUSVERSRSA></SuspensionVersement>", ["01", "06", "09", "44", "70"][random.below(5) as usize]),
            5 => "<FinDroit><MOTICLORSA>PCG</MOTICLORSA><DTCLORSA>2026-09-30</DTCLORSA></FinDroit>".to_owned(),
            6 => "<FinDroitMoisAnterieur><MOTICLORSA>ECH</MOTICLORSA><DTCLORSA>2026-08-31</DTCLORSA></FinDroitMoisAnterieur>".to_owned(),
            _ => String::new(),
        };
        writeln!(
            out,
            "\t\t<PrestationRSA><SituationDossierRSA><EtatDossierRSA><ETATDOSRSA>{state}</ETATDOSRSA></EtatDossierRSA>{detail}</SituationDossierRSA></PrestationRSA>"
        )?;
        writeln!(out, "\t</InfosFoyerRSA>")?;
    }
    writeln!(
        out,
        "\t<TransmissionFlux><NBTOTDOSRSATRANSM>{foyers:08}</NBTOTDOSRSATRANSM><NBTOTDOSRSATRANSMANO>00000000</NBTOTDOSRSATRANSMANO></TransmissionFlux>"
    )?;
    writeln!(out, "</Racine>")?;
    Ok(())
}

//! A synthetic national population, deterministic from a seed: households spread over the RSA
//! authorities in proportion to their RSA caseloads, each with a history shaped like DOMAIN.md
//! (demand → opening → SDD → orientation decision → référent; suspensions, closures, France
//! Travail inscription and radiation, moves between départements, oppositions, consent), about
//! ten events per person. The same population can be pushed over gRPC (`events`) or written as
//! the files institutions send today (`write_cnaf_flux`, `write_ft_csv`).
//!
//! Every person is fictional; NIRs are well formed and unique within a population.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    sync::LazyLock,
};

use chrono::{DateTime, Duration, NaiveDate, TimeZone as _, Utc};
use passerelle_domain::territory::communes;
use passerelle_importers::generate::Sequence;
use passerelle_ingest::proto::{
    self, AllocataireEvent, DemandeurEmploiEvent, Household as ProtoHousehold, Location, OrientationEvent,
    ParcoursEvent, Person, allocataire_event::Fact as Caf, demandeur_emploi_event::Fact as Ft,
    orientation_event::Fact as Cd, parcours_event::Fact as Pa,
};

/// An RSA authority of the synthetic map: its code, the département its communes and CAF
/// belong to, and its weight (RSA households, in thousands: order of magnitude of the DREES
/// yearly figures, rounded; enough to spread the load as the country does).
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub authority: &'static str,
    pub departement: &'static str,
    pub weight: u32,
}

const fn place(authority: &'static str, departement: &'static str, weight: u32) -> Place {
    Place { authority, departement, weight }
}

/// The 101 départements as RSA authorities (Alsace, Corse, Lyon/Rhône as the law draws them).
pub const PLACES: &[Place] = &[
    place("01", "01", 6),
    place("02", "02", 15),
    place("03", "03", 8),
    place("04", "04", 4),
    place("05", "05", 2),
    place("06", "06", 25),
    place("07", "07", 7),
    place("08", "08", 9),
    place("09", "09", 4),
    place("10", "10", 9),
    place("11", "11", 16),
    place("12", "12", 4),
    place("13", "13", 75),
    place("14", "14", 14),
    place("15", "15", 2),
    place("16", "16", 9),
    place("17", "17", 14),
    place("18", "18", 7),
    place("19", "19", 4),
    place("20R", "2A", 3),
    place("20R", "2B", 4),
    place("21", "21", 9),
    place("22", "22", 9),
    place("23", "23", 2),
    place("24", "24", 10),
    place("25", "25", 11),
    place("26", "26", 12),
    place("27", "27", 13),
    place("28", "28", 8),
    place("29", "29", 13),
    place("30", "30", 27),
    place("31", "31", 35),
    place("32", "32", 3),
    place("33", "33", 40),
    place("34", "34", 45),
    place("35", "35", 17),
    place("36", "36", 5),
    place("37", "37", 12),
    place("38", "38", 22),
    place("39", "39", 4),
    place("40", "40", 8),
    place("41", "41", 6),
    place("42", "42", 17),
    place("43", "43", 3),
    place("44", "44", 25),
    place("45", "45", 14),
    place("46", "46", 3),
    place("47", "47", 9),
    place("48", "48", 1),
    place("49", "49", 16),
    place("50", "50", 8),
    place("51", "51", 14),
    place("52", "52", 4),
    place("53", "53", 4),
    place("54", "54", 17),
    place("55", "55", 5),
    place("56", "56", 12),
    place("57", "57", 25),
    place("58", "58", 5),
    place("59", "59", 100),
    place("60", "60", 18),
    place("61", "61", 6),
    place("62", "62", 50),
    place("63", "63", 13),
    place("64", "64", 12),
    place("65", "65", 5),
    place("66", "66", 20),
    place("6AE", "67", 22),
    place("6AE", "68", 15),
    place("69M", "69", 30),
    place("69D", "69", 10),
    place("70", "70", 5),
    place("71", "71", 10),
    place("72", "72", 12),
    place("73", "73", 6),
    place("74", "74", 10),
    place("75", "75", 60),
    place("76", "76", 38),
    place("77", "77", 25),
    place("78", "78", 18),
    place("79", "79", 7),
    place("80", "80", 16),
    place("81", "81", 9),
    place("82", "82", 7),
    place("83", "83", 28),
    place("84", "84", 17),
    place("85", "85", 8),
    place("86", "86", 10),
    place("87", "87", 9),
    place("88", "88", 8),
    place("89", "89", 8),
    place("90", "90", 4),
    place("91", "91", 25),
    place("92", "92", 25),
    place("93", "93", 85),
    place("94", "94", 40),
    place("95", "95", 30),
    place("971", "971", 35),
    place("972", "972", 30),
    place("973", "973", 25),
    place("974", "974", 100),
    place("976", "976", 10),
];

impl Place {
    /// The CAF of the département (its number as the CNAF writes it: 521, 201, 974).
    pub fn caf(&self) -> String {
        match self.departement {
            "2A" => "201".into(),
            "2B" => "202".into(),
            three if three.len() == 3 => three.into(),
            two => format!("{two}1"),
        }
    }

    /// The département's code in the CNAF flux (`IDEPARTE`, 3 characters).
    pub fn ideparte(&self) -> String {
        if self.departement.len() == 2 { format!("0{}", self.departement) } else { self.departement.into() }
    }

    /// A commune of the place, drawn from the INSEE list (Lyon's arrondissements for the
    /// Métropole, where most of its RSA households live).
    fn commune(&self, random: &mut Sequence) -> String {
        if self.authority == "69M" {
            return format!("6938{}", 1 + random.below(9));
        }
        let communes = &COMMUNES_OF_DEPARTEMENT[self.departement];
        communes[random.below(communes.len() as u64) as usize].to_owned()
    }
}

/// Today's communes of each département (the Rhône's without the Métropole's), in code order.
static COMMUNES_OF_DEPARTEMENT: LazyLock<HashMap<&'static str, Vec<&'static str>>> = LazyLock::new(|| {
    let mut by_departement: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
    for (code, entry) in communes::all() {
        let departement = if code.starts_with("97") { &code[..3] } else { &code[..2] };
        if entry.kind() == communes::Kind::Commune && entry.authority() != Some("69M") {
            by_departement.entry(departement).or_default().push(code);
        }
    }
    by_departement.values_mut().for_each(|codes| codes.sort_unstable());
    by_departement
});

/// The institution ids a bench hub knows (see `institutions_toml`).
pub fn caf_institution(place: &Place) -> String {
    format!("caf-{}", place.caf())
}
pub fn departement_institution(authority: &str) -> String {
    format!("cd-{}", authority.to_ascii_lowercase())
}
pub const FRANCE_TRAVAIL: &str = "france-travail";

/// The institutions file of a national hub: one CAF per département, France Travail, one
/// authority per territory.
pub fn institutions_toml() -> String {
    let mut out = String::from("# Written by passerelle-bench: the institutions of a national synthetic population.\n");
    let mut cafs = BTreeMap::new();
    let mut served: BTreeMap<_, std::collections::BTreeSet<&str>> = BTreeMap::new();
    let mut authorities = BTreeMap::new();
    for place in PLACES {
        cafs.insert(place.caf(), caf_institution(place));
        served.entry(place.caf()).or_default().insert(place.authority);
        authorities.insert(place.authority, departement_institution(place.authority));
    }
    for (organisme, id) in cafs {
        let serves: Vec<String> =
            served.get(&organisme).into_iter().flatten().map(|authority| format!("{authority:?}")).collect();
        out.push_str(&format!(
            "[[institution]]\nid = \"{id}\"\nkind = \"CAF\"\norganisme = \"{organisme}\"\nserves = [{}]\n\n",
            serves.join(", ")
        ));
    }
    out.push_str(&format!("[[institution]]\nid = \"{FRANCE_TRAVAIL}\"\nkind = \"FRANCE_TRAVAIL\"\n\n"));
    for (authority, id) in authorities {
        out.push_str(&format!(
            "[[institution]]\nid = \"{id}\"\nkind = \"DEPARTEMENT\"\nterritory = \"{authority}\"\n\n"
        ));
    }
    out
}

/// One push, as the institution's information system would make it.
#[derive(Debug, Clone)]
pub enum Push {
    Caf(AllocataireEvent),
    Ft(DemandeurEmploiEvent),
    Cd(OrientationEvent),
    /// A parcours fact of the département (plan d'action, rendez-vous).
    Parcours(ParcoursEvent),
}

/// A push, its time and who makes it.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at: DateTime<Utc>,
    pub institution: String,
    pub push: Push,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub nir: String,
    pub france_travail_id: Option<String>,
    pub nom: &'static str,
    pub prenom: &'static str,
    pub naissance: NaiveDate,
    pub role: &'static str,
    pub soumis: bool,
    /// France Travail's view at the end: categorie, accompagnement, ppae date, radiation date.
    pub ft: Option<FtState>,
}

#[derive(Debug, Clone)]
pub struct FtState {
    pub inscription: NaiveDate,
    pub categorie: &'static str,
    pub accompagnement: Option<&'static str>,
    pub ppae: Option<NaiveDate>,
    pub radiation: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct Household {
    pub place: Place,
    pub commune: String,
    pub matricule: String,
    pub members: Vec<Member>,
    /// The right's state at the end (ETATDOSRSA): 2 open, 3/4 suspended, 5/6 closed.
    pub state: u8,
    pub demande: NaiveDate,
}

/// A generated population and its pushes, in time order.
pub struct Population {
    pub households: Vec<Household>,
    pub pushes: Vec<Timed>,
}

impl Population {
    pub fn persons(&self) -> usize {
        self.households.iter().map(|h| h.members.len()).sum()
    }
}

const NOMS: &[&str] = &[
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFEBVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "N'DIAYE",
    "DIALLO",
    "TRAORE",
    "NGUYEN",
    "DA SILVA",
    "BENALI",
    "HOARAU",
    "PAYET",
    "FONTAINE",
    "CHEVALIER",
];
const PRENOMS: &[&str] = &[
    "CAMILLE", "LOUIS", "JADE", "GABRIEL", "LEA", "RAPHAEL", "EMMA", "ARTHUR", "CHLOE", "JULES", "NADIA", "KARIM",
    "AMINATA", "MOHAMED", "SARAH", "YANIS", "INES", "THEO", "MANON", "HUGO",
];

/// The unique NIR of the `index`-th person (born in metropolitan France, valid structure).
fn nir_of(index: u64, random: &mut Sequence) -> String {
    let sex = 1 + random.below(2);
    let year = 60 + random.below(40);
    let month = 1 + random.below(12);
    // index → (département of birth, commune, order): unique below 89 × 990 × 999 persons.
    let departement = {
        let n = 1 + (index % 89);
        if n >= 20 { n + 1 } else { n }
    };
    let rest = index / 89;
    let commune = 1 + rest % 990;
    let order = 1 + (rest / 990) % 999;
    format!("{sex}{year:02}{month:02}{departement:02}{commune:03}{order:03}")
}

/// A SIRET with a valid Luhn key (14 digits).
pub fn siret(base: u64) -> String {
    let digits = format!("{:013}", base % 10_000_000_000_000);
    for last in 0..10 {
        let candidate = format!("{digits}{last}");
        let sum: u32 = candidate
            .chars()
            .rev()
            .enumerate()
            .map(|(i, c)| {
                let d = c.to_digit(10).unwrap_or(0);
                if i % 2 == 1 {
                    let double = d * 2;
                    if double > 9 { double - 9 } else { double }
                } else {
                    d
                }
            })
            .sum();
        if sum.is_multiple_of(10) {
            return candidate;
        }
    }
    unreachable!("one of ten check digits satisfies Luhn")
}

fn pick<T: Copy>(random: &mut Sequence, from: &[T]) -> T {
    from[random.below(from.len() as u64) as usize]
}

fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

/// Generates `households` households from `seed`.
pub fn generate(households: u64, seed: u64) -> Population {
    let mut random = Sequence(seed);
    let total: u64 = PLACES.iter().map(|p| u64::from(p.weight)).sum();
    let epoch = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default();
    let mut out = Population { households: Vec::with_capacity(households as usize), pushes: Vec::new() };
    let mut person_index = 0u64;
    for index in 0..households {
        let mut ticket = random.below(total);
        let place = *PLACES
            .iter()
            .find(|p| {
                if ticket < u64::from(p.weight) {
                    true
                } else {
                    ticket -= u64::from(p.weight);
                    false
                }
            })
            .unwrap_or(&PLACES[0]);
        let commune = place.commune(&mut random);
        let adults = if random.chance(30) { 2 } else { 1 };
        let mut members = Vec::new();
        for adult in 0..adults {
            let nir = nir_of(person_index, &mut random);
            let year = 1900 + nir[1..3].parse::<i32>().unwrap_or(80);
            let month = nir[3..5].parse::<u32>().unwrap_or(1);
            let naissance = NaiveDate::from_ymd_opt(year, month, 1 + random.below(28) as u32).unwrap_or(epoch);
            members.push(Member {
                nir,
                france_travail_id: None,
                nom: pick(&mut random, NOMS),
                prenom: pick(&mut random, PRENOMS),
                naissance,
                role: if adult == 0 { "DEM" } else { "CJT" },
                soumis: true,
                ft: None,
            });
            person_index += 1;
        }
        let demande = epoch + Duration::days(random.below(600) as i64);
        let mut household = Household {
            place,
            commune,
            matricule: format!("{:07}", 1_000_000 + index % 9_000_000),
            members,
            state: 2,
            demande,
        };
        let pushes = history(&mut household, index, seed, &mut random);
        out.pushes.extend(pushes);
        out.households.push(household);
    }
    out.pushes.sort_by_key(|t| t.at);
    out
}

/// The pushes of one household's history; updates the household's final state.
fn history(household: &mut Household, index: u64, seed: u64, random: &mut Sequence) -> Vec<Timed> {
    let place = household.place;
    let caf = caf_institution(&place);
    let cd = departement_institution(place.authority);
    let organisme = place.caf();
    let matricule = household.matricule.clone();
    let commune = household.commune.clone();
    let mut sequence = 0u32;
    let mut pushes = Vec::new();
    let mut next_id = |kind: &str| {
        sequence += 1;
        format!("bench-{seed}-{index}-{kind}-{sequence}")
    };
    let at = |date: NaiveDate, minute: i64| -> DateTime<Utc> {
        Utc.from_utc_datetime(&date.and_hms_opt(9, 0, 0).unwrap_or_default()) + Duration::minutes(minute)
    };
    let person = |member: &Member, with_civil: bool| -> Option<Person> {
        Some(Person {
            nir: member.nir.clone(),
            france_travail_id: member.france_travail_id.clone().unwrap_or_default(),
            nom: if with_civil { member.nom.into() } else { String::new() },
            prenoms: if with_civil { member.prenom.into() } else { String::new() },
            date_naissance: if with_civil { day(member.naissance) } else { String::new() },
            ..Person::default()
        })
    };
    let caf_event = |id: String, when: DateTime<Utc>, member: &Member, fact: Caf| AllocataireEvent {
        event_id: id,
        occurred_at: when.to_rfc3339(),
        person: person(member, true),
        household: Some(ProtoHousehold {
            organisme: organisme.clone(),
            matricule: matricule.clone(),
            role: member.role.into(),
        }),
        location: Some(Location { receiving_authority: place.ideparte(), commune: commune.clone() }),
        corrects_event_id: String::new(),
        fact: Some(fact),
    };
    let demande = household.demande;
    let dem = household.members[0].clone();
    // The CAF: demand, partner's role, opening, SDD of each adult.
    pushes.push(Timed {
        at: at(demande, 0),
        institution: caf.clone(),
        push: Push::Caf(caf_event(
            next_id("caf"),
            at(demande, 0),
            &dem,
            Caf::DemandRecorded(proto::RsaDemandRecorded {
                date_demande: day(demande),
                numero_demande: format!("{:011}", random.below(99_999_999_999)),
            }),
        )),
    });
    for member in household.members.iter().skip(1) {
        pushes.push(Timed {
            at: at(demande, 1),
            institution: caf.clone(),
            push: Push::Caf(caf_event(
                next_id("caf"),
                at(demande, 1),
                member,
                Caf::RoleSet(proto::HouseholdRoleSet {}),
            )),
        });
    }
    let opened = demande + Duration::days(10 + random.below(20) as i64);
    pushes.push(Timed {
        at: at(opened, 0),
        institution: caf.clone(),
        push: Push::Caf(caf_event(
            next_id("caf"),
            at(opened, 0),
            &dem,
            Caf::RightOpened(proto::RsaRightOpened { date_ouverture: day(demande) }),
        )),
    });
    for member in &household.members {
        pushes.push(Timed {
            at: at(opened, 1),
            institution: caf.clone(),
            push: Push::Caf(caf_event(
                next_id("caf"),
                at(opened, 1),
                member,
                Caf::SddChanged(proto::SddChanged { soumis: member.soumis }),
            )),
        });
    }
    // France Travail: most adults register, some get a PPAE, some are struck off.
    let mut ft_ids = Vec::new();
    for (position, member) in household.members.iter_mut().enumerate() {
        if !random.chance(65) {
            ft_ids.push(None);
            continue;
        }
        let ft_id = format!("{:011}", 10_000_000_000u64 + (index * 2 + position as u64));
        member.france_travail_id = Some(ft_id.clone());
        let inscription = opened + Duration::days(5 + random.below(40) as i64);
        let categorie = pick(random, &["1", "1", "1", "2", "3"]);
        let mut state = FtState { inscription, categorie, accompagnement: None, ppae: None, radiation: None };
        let location = Some(Location { receiving_authority: String::new(), commune: commune.clone() });
        let ft_event = |id: String, when: DateTime<Utc>, fact: Ft, civil: bool| DemandeurEmploiEvent {
            event_id: id,
            occurred_at: when.to_rfc3339(),
            person: person(member, civil),
            location: location.clone(),
            corrects_event_id: String::new(),
            fact: Some(fact),
        };
        let mut ft_pushes = vec![Timed {
            at: at(inscription, 30),
            institution: FRANCE_TRAVAIL.into(),
            push: Push::Ft(ft_event(
                next_id("ft"),
                at(inscription, 30),
                Ft::Inscription(proto::Inscription {
                    categorie: categorie.into(),
                    motif: "01".into(),
                    date_inscription: day(inscription),
                }),
                true,
            )),
        }];
        if random.chance(60) {
            let modalite = pick(random, &["SUIVI", "GUIDE", "RENFORCE", "GLOBAL"]);
            state.accompagnement = Some(modalite);
            let when = at(inscription + Duration::days(15), 30);
            ft_pushes.push(Timed {
                at: when,
                institution: FRANCE_TRAVAIL.into(),
                push: Push::Ft(ft_event(
                    next_id("ft"),
                    when,
                    Ft::AccompagnementChanged(proto::AccompagnementChanged { modalite: modalite.into() }),
                    false,
                )),
            });
        }
        if random.chance(30) {
            let when = at(inscription + Duration::days(60), 30);
            ft_pushes.push(Timed {
                at: when,
                institution: FRANCE_TRAVAIL.into(),
                push: Push::Ft(ft_event(
                    next_id("ft"),
                    when,
                    Ft::CategorieChanged(proto::CategorieChanged { categorie: pick(random, &["2", "3", "5"]).into() }),
                    false,
                )),
            });
        }
        if random.chance(45) {
            let signed = inscription + Duration::days(20 + random.below(20) as i64);
            state.ppae = Some(signed);
            ft_pushes.push(Timed {
                at: at(signed, 30),
                institution: FRANCE_TRAVAIL.into(),
                push: Push::Ft(ft_event(
                    next_id("ft"),
                    at(signed, 30),
                    Ft::PpaeSigned(proto::PpaeSigned { date_signature: day(signed) }),
                    false,
                )),
            });
        }
        if random.chance(12) {
            let struck = inscription + Duration::days(90 + random.below(200) as i64);
            state.radiation = Some(struck);
            ft_pushes.push(Timed {
                at: at(struck, 30),
                institution: FRANCE_TRAVAIL.into(),
                push: Push::Ft(ft_event(
                    next_id("ft"),
                    at(struck, 30),
                    Ft::Radiation(proto::Radiation { motif: "ABSCTRL".into(), date_radiation: day(struck) }),
                    false,
                )),
            });
        }
        member.ft = Some(state);
        ft_ids.push(Some(ft_id));
        pushes.extend(ft_pushes);
    }
    // The département: an orientation for each adult subject to duties, a référent, a
    // contract; some oppose the sharing, some consent to the diagnostic.
    let structure = siret(2_000_000_000_000 + random.below(500) * 1000);
    for member in &household.members {
        let decided = opened + Duration::days(20 + random.below(60) as i64);
        let kind = if member.france_travail_id.is_some() {
            pick(random, &["PRO", "PRO", "SOCIO_PRO"])
        } else {
            pick(random, &["SOCIAL", "SOCIO_PRO"])
        };
        let uid = format!("ref-{}-{:04}", place.authority.to_ascii_lowercase(), random.below(2000));
        let referent = proto::Agent { email: format!("{uid}@structure.example"), uid, siret: structure.clone() };
        let cd_event = |id: String, when: DateTime<Utc>, fact: Cd| OrientationEvent {
            event_id: id,
            occurred_at: when.to_rfc3339(),
            person: person(member, false),
            location: Some(Location { receiving_authority: place.ideparte(), commune: commune.clone() }),
            corrects_event_id: String::new(),
            fact: Some(fact),
        };
        let mut cd_pushes = vec![
            (at(opened, 120), Cd::OrientationRequested(proto::OrientationRequested { origine: "INITIALE".into() })),
            (
                at(decided, 60),
                Cd::OrientationDecided(proto::OrientationDecided {
                    r#type: kind.into(),
                    structure_siret: structure.clone(),
                    structure_nom: String::new(),
                    referent: None,
                }),
            ),
            (
                at(decided + Duration::days(7), 60),
                Cd::ReferentAssigned(proto::ReferentAssigned { referent: Some(referent) }),
            ),
        ];
        let mut parcours_pushes: Vec<(DateTime<Utc>, Pa)> = Vec::new();
        if kind != "PRO" || random.chance(30) {
            let start = decided + Duration::days(30);
            let contract = if kind == "PRO" { "CONTRAT_ENGAGEMENT" } else { "CER" };
            // The plan d'action signed with the contract; then a follow-up rendez-vous, honoured
            // or missed.
            parcours_pushes.push((
                at(start, 62),
                Pa::EngagementPlanSet(proto::EngagementPlanSet {
                    signed_on: day(start),
                    objectives: vec![proto::Objective { theme: "EMPLOI".into(), label: "Retrouver un emploi".into() }],
                    actions: vec![proto::PlanActionItem {
                        action_id: "action-1".into(),
                        theme: pick(random, &["MOBILITE", "FORMATION", "NUMERIQUE", "LOGEMENT"]).into(),
                        label: "Action d'insertion".into(),
                        status: "EN_COURS".into(),
                        date_debut: day(start),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            ));
            if random.chance(50) {
                let meeting = start + Duration::days(30);
                parcours_pushes.push((
                    at(start, 63),
                    Pa::RendezVousConvoked(proto::RendezVousConvoked {
                        rdv_id: "suivi-1".into(),
                        at: at(meeting, 0).to_rfc3339(),
                        structure_siret: structure.clone(),
                        objet: "SUIVI".into(),
                    }),
                ));
                let outcome = if random.chance(80) {
                    Pa::RendezVousHonoured(proto::RendezVousHonoured { rdv_id: "suivi-1".into() })
                } else {
                    Pa::RendezVousMissed(proto::RendezVousMissed {
                        rdv_id: "suivi-1".into(),
                        excused: random.chance(30),
                    })
                };
                parcours_pushes.push((at(meeting, 30), outcome));
            }
            cd_pushes.push((
                at(start, 60),
                Cd::ContractSigned(proto::ContractSigned {
                    kind: contract.into(),
                    date_debut: day(start),
                    date_fin: day(start + Duration::days(180)),
                }),
            ));
        }
        if random.chance(40) {
            // The référent changes: the first one's follow-up ends, another takes over.
            let change = decided + Duration::days(90 + random.below(90) as i64);
            let first = format!("ref-{}-{:04}", place.authority.to_ascii_lowercase(), random.below(2000));
            cd_pushes.push((at(change, 60), Cd::ReferentEnded(proto::ReferentEnded { uid: first.clone() })));
            cd_pushes.push((
                at(change, 61),
                Cd::ReferentAssigned(proto::ReferentAssigned {
                    referent: Some(proto::Agent {
                        email: format!("{first}@structure.example"),
                        uid: first,
                        siret: structure.clone(),
                    }),
                }),
            ));
        }
        if random.chance(30) {
            cd_pushes.push((at(decided, 61), Cd::ConsentGiven(proto::ConsentGiven {})));
        }
        if random.chance(3) {
            cd_pushes.push((at(decided + Duration::days(2), 60), Cd::OppositionRecorded(proto::OppositionRecorded {})));
        }
        for (when, fact) in cd_pushes {
            pushes.push(Timed {
                at: when,
                institution: cd.clone(),
                push: Push::Cd(cd_event(next_id("cd"), when, fact)),
            });
        }
        for (when, fact) in parcours_pushes {
            pushes.push(Timed {
                at: when,
                institution: cd.clone(),
                push: Push::Parcours(ParcoursEvent {
                    event_id: next_id("pa"),
                    occurred_at: when.to_rfc3339(),
                    person: person(member, false),
                    location: None,
                    corrects_event_id: String::new(),
                    fact: Some(fact),
                }),
            });
        }
    }
    // The right's life: suspensions, closures, moves to another département.
    if random.chance(20) {
        let when = opened + Duration::days(60 + random.below(120) as i64);
        household.state = 4;
        pushes.push(Timed {
            at: at(when, 0),
            institution: caf.clone(),
            push: Push::Caf(caf_event(
                next_id("caf"),
                at(when, 0),
                &dem,
                Caf::RightSuspended(proto::RsaRightSuspended {
                    scope: "PAYMENT".into(),
                    motif: pick(random, &["01", "06", "09", "44", "70"]).into(),
                    date_suspension: day(when),
                }),
            )),
        });
    }
    if random.chance(15) {
        let when = opened + Duration::days(200 + random.below(200) as i64);
        household.state = 5;
        pushes.push(Timed {
            at: at(when, 0),
            institution: caf.clone(),
            push: Push::Caf(caf_event(
                next_id("caf"),
                at(when, 0),
                &dem,
                Caf::RightClosed(proto::RsaRightClosed {
                    motif: pick(random, &["PCG", "ECH", "RSP"]).into(),
                    date_cloture: day(when),
                    prior_month: false,
                }),
            )),
        });
    } else if random.chance(4) {
        // A move: the dossier goes to the CAF of another département (mutation).
        let destination = PLACES[random.below(PLACES.len() as u64) as usize];
        if destination.caf() != organisme && destination.authority != place.authority {
            let when = opened + Duration::days(150 + random.below(200) as i64);
            let new_commune = destination.commune(random);
            let mut event = caf_event(
                next_id("caf"),
                at(when, 0),
                &dem,
                Caf::AddressChanged(proto::AddressChanged {
                    address: Some(proto::Address {
                        lines: vec![format!("{} RUE DE LA REPUBLIQUE", 1 + random.below(120))],
                        code_postal: String::new(),
                        commune: new_commune.clone(),
                    }),
                    mutation: Some(proto::Mutation {
                        organisme_cedant: organisme.clone(),
                        organisme_prenant: destination.caf(),
                        matricule_cedant: matricule.clone(),
                    }),
                    previous_authority: place.authority.into(),
                }),
            );
            event.household =
                Some(ProtoHousehold { organisme: destination.caf(), matricule: matricule.clone(), role: "DEM".into() });
            event.location = Some(Location { receiving_authority: destination.ideparte(), commune: new_commune });
            pushes.push(Timed { at: at(when, 0), institution: caf_institution(&destination), push: Push::Caf(event) });
        }
    }
    let _ = ft_ids;
    pushes
}

/// Writes the monthly CNAF flux ("bénéficiaires") of one CAF: its households' state at the end
/// of the population's history, in the shape of `shared/reference/cnaf` (windows-1252 safe: the
/// names are ASCII).
pub fn write_cnaf_flux(out: &mut impl Write, population: &Population, organisme: &str) -> std::io::Result<u64> {
    writeln!(out, "<?xml version=\"1.0\" encoding=\"windows-1252\"?>")?;
    writeln!(out, "<Racine>")?;
    writeln!(
        out,
        "\t<IdentificationFlux><APPLIEME>CRI</APPLIEME><NUMVERSIONAPPLIEME>6200</NUMVERSIONAPPLIEME><TYPEFLUX>M</TYPEFLUX><NATFLUX>D</NATFLUX><DTCREAFLUX>2026-11-05</DTCREAFLUX><HEUCREAFLUX>01:18:36.0000</HEUCREAFLUX><DTREF>2026-10-31</DTREF></IdentificationFlux>"
    )?;
    let mut written = 0u64;
    for household in population.households.iter().filter(|h| h.place.caf() == organisme) {
        written += 1;
        writeln!(out, "\t<InfosFoyerRSA>")?;
        writeln!(
            out,
            "\t\t<IdentificationRSA><Organisme><FONORG>CAF</FONORG><NUMORG>{organisme}</NUMORG><MATRICULE>{}00000000</MATRICULE></Organisme><Partenaire><TYPEPARTE>CG </TYPEPARTE><IDEPARTE>{}</IDEPARTE></Partenaire><DemandeRSA><DTDEMRSA>{}</DTDEMRSA><NUMDEMRSA>{:011}</NUMDEMRSA></DemandeRSA></IdentificationRSA>",
            household.matricule,
            household.place.ideparte(),
            day(household.demande),
            written
        )?;
        for member in &household.members {
            let sex = &member.nir[0..1];
            writeln!(
                out,
                "\t\t<Personne><Identification><QUAL>{}</QUAL><NOM>{}</NOM><PRENOM>{}</PRENOM><DTNAI>{}</DTNAI><TYPEDTNAI>N</TYPEDTNAI><NIR>{}</NIR><TOPVALIEC>1</TOPVALIEC><SEXE>{sex}</SEXE></Identification>",
                if sex == "1" { "MR" } else { "MME" },
                member.nom.replace('\'', " "),
                member.prenom,
                day(member.naissance),
                member.nir
            )?;
            writeln!(
                out,
                "\t\t\t<DossierCAF><TOPRESPDOS>{}</TOPRESPDOS><DDRATDOS>{}</DDRATDOS></DossierCAF><Prestations><NATPREST>RSA</NATPREST><ROLEPERS>{}</ROLEPERS><TOPCHAPERS>1</TOPCHAPERS></Prestations>",
                u8::from(member.role == "DEM"),
                day(household.demande),
                member.role
            )?;
            writeln!(
                out,
                "\t\t\t<MontantCalculDroitRSAPersonne><TOPPERSDRODEVORSA>{}</TOPPERSDRODEVORSA></MontantCalculDroitRSAPersonne></Personne>",
                u8::from(member.soumis)
            )?;
        }
        writeln!(
            out,
            "\t\t<DonneesAdministratives><Adresse><TroncCommunAdresse><RGADR>01</RGADR><DTEMM>{}</DTEMM><PAYS>FRA</PAYS><TYPEADR>D</TYPEADR><ETATADR>CO</ETATADR></TroncCommunAdresse><AdresseDetailleeFrance><NUMVOIE>1</NUMVOIE><LIBTYPEVOIE>RUE</LIBTYPEVOIE><NOMVOIE>DE LA GARE</NOMVOIE><NUMCOM>{}</NUMCOM></AdresseDetailleeFrance></Adresse></DonneesAdministratives>",
            day(household.demande),
            household.commune
        )?;
        let detail = match household.state {
            4 => {
                "<SuspensionVersement><MOTISUSVERSRSA>06</MOTISUSVERSRSA><DDSUSVERSRSA>2026-10-01</DDSUSVERSRSA></SuspensionVersement>"
            }
            5 => "<FinDroit><MOTICLORSA>PCG</MOTICLORSA><DTCLORSA>2026-09-30</DTCLORSA></FinDroit>",
            _ => "",
        };
        writeln!(
            out,
            "\t\t<PrestationRSA><SituationDossierRSA><EtatDossierRSA><ETATDOSRSA>{}</ETATDOSRSA></EtatDossierRSA>{detail}</SituationDossierRSA></PrestationRSA>",
            household.state
        )?;
        writeln!(out, "\t</InfosFoyerRSA>")?;
    }
    writeln!(
        out,
        "\t<TransmissionFlux><NBTOTDOSRSATRANSM>{written:08}</NBTOTDOSRSATRANSM><NBTOTDOSRSATRANSMANO>00000000</NBTOTDOSRSATRANSMANO></TransmissionFlux>"
    )?;
    writeln!(out, "</Racine>")?;
    Ok(written)
}

/// Writes France Travail's extract (";"-separated, the columns `importers::ft_csv` reads): one
/// row per registered job seeker of the population.
pub fn write_ft_csv(out: &mut impl Write, population: &Population) -> std::io::Result<u64> {
    writeln!(
        out,
        "identifiant_ft;nir;nom;prenom;date_naissance;code_commune;date_inscription;categorie;motif_inscription;modalite_accompagnement;referent_nom;referent_email;code_safir;date_ppae;date_cessation;motif_cessation;date_radiation;motif_radiation"
    )?;
    let mut rows = 0;
    for household in &population.households {
        for member in &household.members {
            let (Some(ft_id), Some(state)) = (&member.france_travail_id, &member.ft) else { continue };
            rows += 1;
            writeln!(
                out,
                "{ft_id};{};{};{};{};{};{};{};01;{};;;;{};;;{};{}",
                member.nir,
                member.nom,
                member.prenom,
                day(member.naissance),
                household.commune,
                day(state.inscription),
                state.categorie,
                state.accompagnement.unwrap_or_default(),
                state.ppae.map(day).unwrap_or_default(),
                state.radiation.map(day).unwrap_or_default(),
                if state.radiation.is_some() { "ABSCTRL" } else { "" },
            )?;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use passerelle_eventlog::{secrets::SecretKey, subject::SubjectKeys};
    use passerelle_ingest::{
        institutions::Institutions,
        normalise::{self, Context},
        scope,
    };

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_population_and_another_seed_another() {
        let digest = |population: &Population| {
            population.pushes.iter().map(|t| format!("{}|{}|{:?}", t.at, t.institution, t.push)).collect::<Vec<_>>()
        };
        assert_eq!(digest(&generate(200, 7)), digest(&generate(200, 7)));
        assert_ne!(digest(&generate(200, 7)), digest(&generate(200, 8)));
    }

    #[test]
    fn the_population_is_spread_like_the_rsa_caseloads_with_about_ten_events_per_person() {
        let population = generate(20_000, 2026);
        let per_person = population.pushes.len() as f64 / population.persons() as f64;
        assert!((8.0..=12.0).contains(&per_person), "{per_person} events per person");
        let share = |authority: &str| {
            population.households.iter().filter(|h| h.place.authority == authority).count() as f64 / 20_000.0
        };
        let total: f64 = PLACES.iter().map(|p| f64::from(p.weight)).sum();
        // Nord (100 thousand of ~1,900 thousand) vs Lozère (1 thousand): within sampling error.
        assert!((share("59") - 100.0 / total).abs() < 0.01, "Nord {}", share("59"));
        assert!(share("48") < 0.003, "Lozère {}", share("48"));
        assert!(PLACES.iter().all(|p| population.households.iter().any(|h| h.place.authority == p.authority)));
        let mut nirs: Vec<&str> =
            population.households.iter().flat_map(|h| h.members.iter().map(|m| m.nir.as_str())).collect();
        let persons = nirs.len();
        nirs.sort_unstable();
        nirs.dedup();
        assert_eq!(nirs.len(), persons, "NIRs are unique");
        assert!(population.pushes.windows(2).all(|w| w[0].at <= w[1].at), "pushes in time order");
        assert!(population.pushes.iter().all(|t| t.at < Utc::now()), "no fact in the future");
    }

    /// Every push passes the hub's own validation and the caller's scope, as the gRPC API
    /// applies them; a refused push would make the benchmark measure refusals.
    #[test]
    fn every_push_is_accepted_by_the_hubs_normalisation_and_scope() {
        let institutions = Institutions::from_toml(&institutions_toml()).expect("institutions");
        let keys = SubjectKeys::new(SecretKey::from_bytes([7; 32]));
        let population = generate(3_000, 11);
        for timed in &population.pushes {
            let institution = institutions.get(&timed.institution).expect("a known institution");
            let context = Context {
                keys: &keys,
                source: passerelle_domain::event::Source {
                    institution: institution.id.clone(),
                    kind: institution.kind,
                    relayed_by: None,
                    relay_file: None,
                },
                now: Utc::now(),
            };
            let normalised = match &timed.push {
                Push::Caf(event) => normalise::allocataire(&context, event),
                Push::Ft(event) => normalise::demandeur_emploi(&context, event),
                Push::Cd(event) => normalise::orientation(&context, event),
                Push::Parcours(event) => normalise::parcours(&context, event),
            };
            let mut canonical = normalised.unwrap_or_else(|v| panic!("{:?} refused: {:?}", timed.push, v.into_vec()));
            scope::authorise(institution, None, &institutions, &mut canonical)
                .unwrap_or_else(|d| panic!("{} denied {:?}: {}", timed.institution, timed.push, d.message));
        }
    }

    /// The files read back with the importers' readers, without a refusal.
    #[test]
    fn the_cnaf_flux_and_the_france_travail_extract_read_back_with_the_importers() {
        let population = generate(500, 3);
        let organisme = population.households[0].place.caf();
        let mut flux = Vec::new();
        let written = write_cnaf_flux(&mut flux, &population, &organisme).expect("flux");
        let mut foyers = 0;
        let mut events = 0;
        passerelle_importers::cnaf::read_flux(
            "flux.xml",
            flux.as_slice(),
            |_| {},
            |warning| panic!("warning: {warning}"),
            |header, foyer| {
                let (produced, refusals) = passerelle_importers::cnaf::events_of(
                    &passerelle_importers::IdKey::from_bytes([7; 32]),
                    header,
                    &foyer,
                );
                assert!(refusals.is_empty(), "refusals: {:?}", refusals.len());
                events += produced.len();
                foyers += 1;
                Ok(())
            },
        )
        .expect("the flux reads");
        assert_eq!(foyers, written);
        assert!(events as u64 >= written);
        let mut csv = Vec::new();
        let rows = write_ft_csv(&mut csv, &population).expect("csv");
        let mut read = 0;
        passerelle_importers::ft_csv::read_extract("ft.csv", csv.as_slice(), |row| {
            passerelle_importers::ft_csv::events_of(&passerelle_importers::IdKey::from_bytes([7; 32]), &row)
                .map_err(anyhow::Error::msg)?;
            read += 1;
            Ok(())
        })
        .expect("the extract reads");
        assert_eq!(read, rows);
    }
}

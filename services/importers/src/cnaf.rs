//! The CNAF RSA flux ("bénéficiaires" monthly or "instruction" daily; schema vrsb0801.xsd):
//! read as a stream, one foyer (`InfosFoyerRSA`) at a time, so a 200 MB file is never held in
//! memory, and turned into the allocataire facts each foyer implies.

use std::io::{BufRead, Read};

use passerelle_ingest::proto::{self, AllocataireEvent, Household, Location, Person, allocataire_event::Fact};
use quick_xml::{Reader, events::Event};

use crate::{InvalidFile, fact_id};

/// The flux header.
#[derive(Debug, Clone, Default)]
pub struct FluxHeader {
    /// `M` (monthly "bénéficiaires") or `Q` (daily "instruction").
    pub type_flux: String,
    /// Reference date of a monthly snapshot.
    pub dtref: String,
}

/// A person of a foyer. `Debug` shows the role and the flag, never an identifier, name or date.
#[derive(Clone, Default)]
pub struct FluxPerson {
    pub nir: String,
    pub nom: String,
    pub prenom: String,
    pub dtnai: String,
    /// ROLEPERS of the RSA prestation.
    pub role_rsa: String,
    pub idassedic: String,
    /// TOPPERSDRODEVORSA: "1" soumis à droits et devoirs.
    pub sdd: String,
}

/// A foyer of the flux. `Debug` shows its line, caisse, state and number of persons, never a
/// matricule, name, address or date of birth.
#[derive(Clone, Default)]
pub struct Foyer {
    /// Line of `<InfosFoyerRSA>` in the file.
    pub line: u64,
    pub fonorg: String,
    pub numorg: String,
    pub matricule: String,
    pub ideparte: String,
    pub dtdemrsa: String,
    pub numdemrsa: String,
    pub cedant: Option<(String, String, String, String)>,
    pub persons: Vec<FluxPerson>,
    pub address_lines: Vec<String>,
    pub numcom: String,
    pub codepos: String,
    pub dtemm: String,
    pub etatdosrsa: String,
    pub refus: (String, String),
    pub suspension_droit: (String, String),
    pub suspension_versement: (String, String),
    pub fin_droit: (String, String),
    pub fin_droit_anterieur: (String, String),
}

impl std::fmt::Debug for FluxPerson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluxPerson")
            .field("role_rsa", &self.role_rsa)
            .field("sdd", &self.sdd)
            .field("nir", &(!self.nir.is_empty()))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Foyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Foyer")
            .field("line", &self.line)
            .field("numorg", &self.numorg)
            .field("etatdosrsa", &self.etatdosrsa)
            .field("persons", &self.persons)
            .finish_non_exhaustive()
    }
}

/// The longest text of one element, in characters: the XSD's longest field is 38 (an address
/// line); anything far longer is not a flux.
pub const MAX_TEXT: usize = 4096;
/// The deepest nesting of elements: a flux nests about eight deep.
pub const MAX_DEPTH: usize = 32;
/// The most bytes the reader takes for one XML event (a tag, a text, a comment): a file whose
/// tag never closes is refused at this size instead of filling memory.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Counts lines as the XML reader consumes the stream, to say where a file is wrong, and the
/// bytes since the last XML event, to refuse one that never ends.
struct LineCounting<R> {
    inner: R,
    line: u64,
    since_event: usize,
}

impl<R: BufRead> LineCounting<R> {
    fn over(&self) -> std::io::Result<()> {
        if self.since_event > MAX_EVENT_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("one tag or text runs over {MAX_EVENT_BYTES} bytes: this is not a CNAF flux"),
            ));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.over()?;
        let read = self.inner.read(buf)?;
        self.line += buf[..read].iter().filter(|b| **b == b'\n').count() as u64;
        self.since_event += read;
        Ok(read)
    }
}

impl<R: BufRead> BufRead for LineCounting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.over()?;
        self.inner.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        if let Ok(buffer) = self.inner.fill_buf() {
            let consumed = &buffer[..amount.min(buffer.len())];
            self.line += consumed.iter().filter(|b| **b == b'\n').count() as u64;
        }
        self.since_event += amount;
        self.inner.consume(amount);
    }
}

/// Reads a flux from a windows-1252 byte stream, calling `on_foyer` for each foyer in order.
/// Stops at the first structural error, saying where.
pub fn read_flux<R: Read>(
    file_name: &str,
    input: R,
    mut on_header: impl FnMut(&FluxHeader),
    mut on_warning: impl FnMut(String),
    mut on_foyer: impl FnMut(&FluxHeader, Foyer) -> anyhow::Result<()>,
) -> Result<u64, anyhow::Error> {
    let decoded =
        encoding_rs_io::DecodeReaderBytesBuilder::new().encoding(Some(encoding_rs::WINDOWS_1252)).build(input);
    let counting =
        LineCounting { inner: std::io::BufReader::with_capacity(64 * 1024, decoded), line: 0, since_event: 0 };
    let mut reader = Reader::from_reader(counting);
    reader.config_mut().trim_text(true);
    let invalid = |line: u64, reason: String| InvalidFile { file: file_name.to_owned(), line: line + 1, reason };

    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut header = FluxHeader::default();
    let mut header_seen = false;
    let mut foyer: Option<Foyer> = None;
    let mut person: Option<FluxPerson> = None;
    let mut prestation = (String::new(), String::new());
    let mut address_done = false;
    let mut foyers: u64 = 0;
    let mut declared: Option<u64> = None;
    let mut finished = false;
    let mut buffer = Vec::new();
    loop {
        reader.get_mut().since_event = 0;
        let event = reader.read_event_into(&mut buffer);
        // Newlines consumed so far: the event ends on the next line (reported 1-based).
        let line = reader.get_ref().line;
        let event = event.map_err(|error| invalid(line, format!("not well-formed XML: {error}")))?;
        match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if path.is_empty() && name != "Racine" {
                    return Err(invalid(
                        line,
                        format!("the root element is <{name}>, a CNAF flux starts with <Racine>"),
                    )
                    .into());
                }
                match name.as_str() {
                    "InfosFoyerRSA" => {
                        if !header_seen {
                            return Err(invalid(
                                line,
                                "<InfosFoyerRSA> before <IdentificationFlux> and its DTREF".into(),
                            )
                            .into());
                        }
                        foyer = Some(Foyer { line: line + 1, ..Foyer::default() });
                        address_done = false;
                    }
                    "Personne" => person = Some(FluxPerson::default()),
                    "Prestations" => prestation = (String::new(), String::new()),
                    "OrganismeCedant" => {
                        if let Some(f) = foyer.as_mut() {
                            f.cedant = Some(Default::default());
                        }
                    }
                    _ => {}
                }
                path.push(name);
                if path.len() > MAX_DEPTH {
                    return Err(invalid(
                        line,
                        format!("elements nest more than {MAX_DEPTH} deep: this is not a CNAF flux"),
                    )
                    .into());
                }
                text.clear();
            }
            Event::Text(content) => {
                let decoded = content.decode().map_err(|e| invalid(line, format!("text is not valid: {e}")))?;
                text.push_str(&decoded);
            }
            Event::GeneralRef(reference) => {
                // A character reference (`&#233;`, `&#xE9;`) is the character; the five
                // predefined entities are theirs; no other entity is declared in a flux.
                match reference.resolve_char_ref() {
                    Ok(Some(character)) if !character.is_control() || matches!(character, '\t' | '\n' | '\r') => {
                        text.push(character);
                    }
                    Ok(Some(character)) => {
                        return Err(invalid(
                            line,
                            format!("the character reference to U+{:04X} is a control character", character as u32),
                        )
                        .into());
                    }
                    Err(error) => return Err(invalid(line, format!("character reference: {error}")).into()),
                    Ok(None) => {
                        let name = reference.decode().map_err(|e| invalid(line, format!("entity: {e}")))?;
                        text.push_str(match name.as_ref() {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            other => return Err(invalid(line, format!("unknown entity &{other};")).into()),
                        });
                    }
                }
            }
            Event::End(end) => {
                let name = String::from_utf8_lossy(end.local_name().as_ref()).into_owned();
                if path.last() != Some(&name) {
                    return Err(invalid(
                        line,
                        format!("</{name}> closes <{}>", path.last().cloned().unwrap_or_default()),
                    )
                    .into());
                }
                let parent = path.get(path.len().saturating_sub(2)).cloned().unwrap_or_default();
                let value = text.trim().to_owned();
                text.clear();
                path.pop();
                match (parent.as_str(), name.as_str()) {
                    ("IdentificationFlux", "TYPEFLUX") => header.type_flux = value,
                    ("IdentificationFlux", "DTREF") => header.dtref = value,
                    ("Racine", "IdentificationFlux") => {
                        if crate::dates::normalise(&header.dtref).ok().flatten().is_none() {
                            return Err(
                                invalid(line, "IdentificationFlux has no valid DTREF (reference date)".into()).into()
                            );
                        }
                        header_seen = true;
                        on_header(&header);
                    }
                    ("TransmissionFlux", "NBTOTDOSRSATRANSM") => declared = value.parse().ok(),
                    ("Racine", "TransmissionFlux") => finished = true,
                    ("Racine", "InfosFoyerRSA") => {
                        let complete = foyer.take().ok_or_else(|| invalid(line, "foyer ended twice".into()))?;
                        for (field, value) in [
                            ("NUMORG", &complete.numorg),
                            ("MATRICULE", &complete.matricule),
                            ("IDEPARTE", &complete.ideparte),
                        ] {
                            if value.is_empty() {
                                return Err(invalid(complete.line - 1, format!("the foyer has no {field}")).into());
                            }
                        }
                        foyers += 1;
                        on_foyer(&header, complete)?;
                    }
                    ("InfosFoyerRSA", "Personne") => {
                        if let (Some(f), Some(p)) = (foyer.as_mut(), person.take()) {
                            f.persons.push(p);
                        }
                    }
                    ("Personne", "Prestations") => {
                        if prestation.0 == "RSA"
                            && let Some(p) = person.as_mut()
                        {
                            p.role_rsa = prestation.1.clone();
                        }
                    }
                    ("Prestations", "NATPREST") => prestation.0 = value,
                    ("Prestations", "ROLEPERS") => prestation.1 = value,
                    ("Identification", field) if person.is_some() => {
                        let p = person.as_mut().expect("checked");
                        match field {
                            "NOM" => p.nom = value,
                            "PRENOM" => p.prenom = value,
                            "DTNAI" => p.dtnai = value,
                            "NIR" => p.nir = value,
                            _ => {}
                        }
                    }
                    ("DossierPoleEmploi", "IDASSEDIC") => {
                        if let Some(p) = person.as_mut() {
                            p.idassedic = value;
                        }
                    }
                    ("MontantCalculDroitRSAPersonne", "TOPPERSDRODEVORSA") => {
                        if let Some(p) = person.as_mut() {
                            p.sdd = value;
                        }
                    }
                    ("DonneesAdministratives", "Adresse") => address_done = true,
                    (_, _) if foyer.is_some() => {
                        let f = foyer.as_mut().expect("checked");
                        assign_foyer_field(f, &parent, &name, value, address_done);
                    }
                    _ => {}
                }
            }
            Event::Eof => {
                if !finished {
                    let open = path.last().cloned().unwrap_or_else(|| "Racine".into());
                    return Err(invalid(
                        line,
                        format!("the file ends inside <{open}>: it is truncated (no <TransmissionFlux>)"),
                    )
                    .into());
                }
                // Real files disagree with their own trailer (the reference sample declares 1
                // dossier and holds 2): a warning for the operator, not a reason to refuse.
                if let Some(declared) = declared
                    && declared != foyers
                {
                    on_warning(format!("TransmissionFlux declares {declared} dossiers, the file holds {foyers}"));
                }
                return Ok(foyers);
            }
            _ => {}
        }
        if text.len() > MAX_TEXT {
            return Err(invalid(
                line,
                format!(
                    "the text of <{}> runs over {MAX_TEXT} bytes: this is not a CNAF flux",
                    path.last().cloned().unwrap_or_default()
                ),
            )
            .into());
        }
        buffer.clear();
    }
}

fn assign_foyer_field(f: &mut Foyer, parent: &str, name: &str, value: String, address_done: bool) {
    match (parent, name) {
        ("Organisme", "FONORG") => f.fonorg = value,
        ("Organisme", "NUMORG") => f.numorg = value,
        ("Organisme", "MATRICULE") => f.matricule = value,
        ("Partenaire", "IDEPARTE") => f.ideparte = value,
        ("DemandeRSA", "DTDEMRSA") => f.dtdemrsa = value,
        ("DemandeRSA", "NUMDEMRSA") => f.numdemrsa = value,
        ("OrganismeCedant", field) => {
            if let Some(cedant) = f.cedant.as_mut() {
                match field {
                    "FONORGCEDMUT" => cedant.0 = value,
                    "NUMORGCEDMUT" => cedant.1 = value,
                    "MATRICULEORGCEDMUT" => cedant.2 = value,
                    "DDARRMUT" => cedant.3 = value,
                    _ => {}
                }
            }
        }
        ("AdresseDetailleeFrance", field) if !address_done => match field {
            "NUMCOM" => f.numcom = value,
            "CODEPOS" => f.codepos = value,
            "NUMVOIE" | "LIBTYPEVOIE" | "NOMVOIE" | "COMPLIDEADR" | "COMPLADR" | "LIEUDIST" if !value.is_empty() => {
                if field == "NUMVOIE" || f.address_lines.is_empty() {
                    f.address_lines.push(value);
                } else if let Some(last) = f.address_lines.last_mut() {
                    last.push(' ');
                    last.push_str(&value);
                }
            }
            _ => {}
        },
        ("TroncCommunAdresse", "DTEMM") if !address_done => f.dtemm = value,
        ("EtatDossierRSA", "ETATDOSRSA") => f.etatdosrsa = value,
        ("Refus", "MOTIREFURSA") => f.refus.0 = value,
        ("Refus", "DTREFURSA") => f.refus.1 = value,
        ("SuspensionDroit", "MOTISUSDRORSA") => f.suspension_droit.0 = value,
        ("SuspensionDroit", "DDSUSDRORSA") => f.suspension_droit.1 = value,
        ("SuspensionVersement", "MOTISUSVERSRSA") => f.suspension_versement.0 = value,
        ("SuspensionVersement", "DDSUSVERSRSA") => f.suspension_versement.1 = value,
        ("FinDroit", "MOTICLORSA") => f.fin_droit.0 = value,
        ("FinDroit", "DTCLORSA") => f.fin_droit.1 = value,
        ("FinDroitMoisAnterieur", "MOTICLORSA") => f.fin_droit_anterieur.0 = value,
        ("FinDroitMoisAnterieur", "DTCLORSA") => f.fin_droit_anterieur.1 = value,
        _ => {}
    }
}

/// A fact the importer could not turn into an event (the hub never saw it).
#[derive(Debug, Clone)]
pub struct LocalRefusal {
    pub line: u64,
    pub reason: String,
}

fn instant(date: &str) -> String {
    format!("{date}T00:00:00Z")
}

fn date_or_raw(raw: &str) -> String {
    crate::dates::normalise(raw).ok().flatten().unwrap_or_else(|| raw.to_owned())
}

/// The allocataire events a foyer implies. Facts of the foyer (demand, right state, address)
/// are published about the demandeur (or the first member when the flux has no DEM); facts of
/// persons (role, SDD) about each member. Unknown codes are sent as they are: the hub refuses
/// them with a reason, or keeps an unknown motif flagged.
pub fn events_of(
    id_key: &crate::IdKey,
    header: &FluxHeader,
    foyer: &Foyer,
) -> (Vec<AllocataireEvent>, Vec<LocalRefusal>) {
    let mut events = Vec::new();
    let mut refusals = Vec::new();
    let dtref = date_or_raw(&header.dtref);
    let matricule_key = foyer.matricule.trim().trim_end_matches('0').to_owned();
    let location = || Some(Location { receiving_authority: foyer.ideparte.clone(), commune: foyer.numcom.clone() });
    let household = |role: &str| {
        Some(Household { organisme: foyer.numorg.clone(), matricule: foyer.matricule.clone(), role: role.to_owned() })
    };
    let person_of = |p: &FluxPerson| {
        Some(Person {
            nir: p.nir.clone(),
            nom: p.nom.clone(),
            prenoms: p.prenom.clone(),
            date_naissance: date_or_raw(&p.dtnai),
            idassedic: p.idassedic.clone(),
            ..Person::default()
        })
    };
    // What identifies a member in event ids: the NIR, else the civil identity (hashed).
    let member_key = |p: &FluxPerson| {
        if p.nir.is_empty() { format!("civ|{}|{}|{}", p.nom, p.prenom, p.dtnai) } else { format!("nir|{}", p.nir) }
    };
    let event = |id: String, when: String, who: &FluxPerson, role: &str, fact: Fact| AllocataireEvent {
        event_id: id,
        occurred_at: instant(&when),
        person: person_of(who),
        household: household(role),
        location: location(),
        corrects_event_id: String::new(),
        fact: Some(fact),
    };
    let Some(demandeur) = foyer.persons.iter().find(|p| p.role_rsa == "DEM").or_else(|| foyer.persons.first()) else {
        refusals.push(LocalRefusal { line: foyer.line, reason: "the foyer has no Personne".into() });
        return (events, refusals);
    };
    let dem_key = member_key(demandeur);
    let base = [foyer.numorg.as_str(), matricule_key.as_str()];
    let id = |fact: &str, parts: &[&str]| {
        let mut all: Vec<&str> = base.to_vec();
        all.extend_from_slice(parts);
        fact_id(id_key, &format!("cnaf.{fact}"), &all)
    };

    if !foyer.dtdemrsa.is_empty() {
        let date = date_or_raw(&foyer.dtdemrsa);
        events.push(event(
            id("demand", &[&dem_key, &date]),
            date.clone(),
            demandeur,
            &demandeur.role_rsa,
            Fact::DemandRecorded(proto::RsaDemandRecorded {
                date_demande: date,
                numero_demande: foyer.numdemrsa.clone(),
            }),
        ));
    }

    let demand = date_or_raw(&foyer.dtdemrsa);
    let state = foyer.etatdosrsa.as_str();
    let (fact, when, detail): (Option<Fact>, String, String) = match state {
        "0" => (None, dtref.clone(), String::new()),
        "1" => (
            Some(Fact::RightRefused(proto::RsaRightRefused { motif: foyer.refus.0.clone() })),
            date_or_raw(&foyer.refus.1),
            foyer.refus.0.clone(),
        ),
        "2" => (
            Some(Fact::RightOpened(proto::RsaRightOpened { date_ouverture: String::new() })),
            dtref.clone(),
            String::new(),
        ),
        "3" | "4" => {
            // 3: the right is suspended (MOTISUSDRORSA), 4: its payment (MOTISUSVERSRSA).
            let ((motif, date), scope) = if state == "3" {
                (&foyer.suspension_droit, "RIGHT")
            } else {
                (&foyer.suspension_versement, "PAYMENT")
            };
            (
                Some(Fact::RightSuspended(proto::RsaRightSuspended {
                    scope: scope.into(),
                    motif: motif.clone(),
                    date_suspension: date_or_raw(date),
                })),
                date_or_raw(date),
                format!("{motif}|{date}"),
            )
        }
        "5" | "6" => {
            let (motif, date) = if state == "5" { &foyer.fin_droit } else { &foyer.fin_droit_anterieur };
            (
                Some(Fact::RightClosed(proto::RsaRightClosed {
                    motif: motif.clone(),
                    date_cloture: date_or_raw(date),
                    prior_month: state == "6",
                })),
                date_or_raw(date),
                format!("{motif}|{date}"),
            )
        }
        other => {
            refusals.push(LocalRefusal {
                line: foyer.line,
                reason: format!(
                    "ETATDOSRSA {other:?} is not a right state (0 to 6): the foyer's right state was not imported"
                ),
            });
            (None, dtref.clone(), String::new())
        }
    };
    if let Some(fact) = fact {
        let when = if when.is_empty() { dtref.clone() } else { when };
        events.push(event(
            id("state", &[&dem_key, &demand, state, &detail]),
            when,
            demandeur,
            &demandeur.role_rsa,
            fact,
        ));
    }

    for member in &foyer.persons {
        let key = member_key(member);
        if !member.role_rsa.is_empty() {
            events.push(event(
                id("role", &[&key, &member.role_rsa]),
                dtref.clone(),
                member,
                &member.role_rsa,
                Fact::RoleSet(proto::HouseholdRoleSet {}),
            ));
        }
        if !member.sdd.is_empty() {
            events.push(event(
                id("sdd", &[&key, &demand, &member.sdd]),
                dtref.clone(),
                member,
                &member.role_rsa,
                Fact::SddChanged(proto::SddChanged { soumis: member.sdd == "1" }),
            ));
        }
    }

    if !foyer.numcom.is_empty() || foyer.cedant.is_some() {
        let mutation = foyer.cedant.as_ref().map(|(_, numorg, matricule, _)| proto::Mutation {
            organisme_cedant: numorg.clone(),
            organisme_prenant: foyer.numorg.clone(),
            matricule_cedant: matricule.clone(),
        });
        let arrival = foyer.cedant.as_ref().map(|c| date_or_raw(&c.3)).filter(|d| !d.is_empty());
        let moved_in = date_or_raw(&foyer.dtemm);
        let when = arrival
            .clone()
            .or_else(|| (!moved_in.is_empty()).then(|| moved_in.clone()))
            .unwrap_or_else(|| dtref.clone());
        let address_text = foyer.address_lines.join("|");
        let cedant_text = foyer.cedant.as_ref().map(|c| format!("{}|{}|{}", c.1, c.2, c.3)).unwrap_or_default();
        events.push(event(
            id("address", &[&dem_key, &foyer.numcom, &foyer.codepos, &address_text, &moved_in, &cedant_text]),
            when,
            demandeur,
            &demandeur.role_rsa,
            Fact::AddressChanged(proto::AddressChanged {
                address: Some(proto::Address {
                    lines: foyer.address_lines.clone(),
                    code_postal: foyer.codepos.clone(),
                    commune: foyer.numcom.clone(),
                }),
                mutation,
                previous_authority: String::new(),
            }),
        ));
    }
    (events, refusals)
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../tests/fixtures/cnaf/RSABEM.xml");

    fn read(text: &str) -> Result<Vec<Foyer>, String> {
        let mut foyers = Vec::new();
        read_flux(
            "f.xml",
            text.as_bytes(),
            |_| {},
            |_| {},
            |_, foyer| {
                foyers.push(foyer);
                Ok(())
            },
        )
        .map(|_| foyers)
        .map_err(|error| error.to_string())
    }

    #[test]
    fn character_references_are_the_characters_they_name() {
        let first = SAMPLE.find("<NOM>").expect("a NOM") + "<NOM>".len();
        let end = first + SAMPLE[first..].find("</NOM>").expect("closed");
        let flux = format!("{}H&#201;L&#xC8;NE{}", &SAMPLE[..first], &SAMPLE[end..]);
        let foyers = read(&flux).expect("a valid flux");
        assert!(foyers.iter().flat_map(|f| &f.persons).any(|p| p.nom == "HÉLÈNE"));
        let control = format!("{}A&#1;B{}", &SAMPLE[..first], &SAMPLE[end..]);
        assert!(read(&control).expect_err("a control character").contains("control character"));
    }

    #[test]
    fn a_text_too_long_a_nesting_too_deep_or_a_tag_that_never_ends_is_refused_naming_the_line() {
        let first = SAMPLE.find("<NOM>").expect("a NOM") + "<NOM>".len();
        let line = SAMPLE[..first].lines().count();
        let long = format!("{}{}{}", &SAMPLE[..first], "A".repeat(MAX_TEXT + 1), &SAMPLE[first..]);
        let error = read(&long).expect_err("too long");
        assert!(error.contains(&format!("f.xml:{line}:")) && error.contains("runs over"), "{error}");
        let deep = format!("{}{}", &SAMPLE[..first], "<X>".repeat(MAX_DEPTH + 1));
        assert!(read(&deep).expect_err("too deep").contains("nest more than"));
        let endless = format!("{}<X {}", &SAMPLE[..first], "a".repeat(MAX_EVENT_BYTES * 2));
        assert!(read(&endless).expect_err("endless tag").contains("runs over"));
    }
}

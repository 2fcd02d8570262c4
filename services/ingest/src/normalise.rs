//! Validation and normalisation: a request of the ingestion API becomes a canonical event, or
//! the full list of what is wrong with it. Nothing here does I/O.

use chrono::{DateTime, Utc};
use passerelle_domain::{
    Accompagnement, AgentUid, Authority, Categorie, CommuneCode, ContractKind, DepartementCode, DepartementInternalId,
    Email, EventId, FranceTravailId, Idassedic, Matricule, Motif, MotifList, Nir, Organisme, OrientationOrigin,
    OrientationType, Placement, Role, Siret, SuspensionScope,
    dates::{parse_date, parse_instant},
    event::{
        AgentRef, CanonicalEvent, Envelope, Family, HouseholdRef, Mutation, Payload, PersonalData, Source, SubjectKey,
    },
};
use passerelle_eventlog::subject::SubjectKeys;

use crate::{proto, violations::Violations};

/// What normalisation needs besides the request.
pub struct Context<'a> {
    pub keys: &'a SubjectKeys,
    pub source: Source,
    pub now: DateTime<Utc>,
}

/// The parts every family shares.
struct Common {
    event_id: Option<EventId>,
    occurred_at: Option<DateTime<Utc>>,
    corrects: Option<EventId>,
}

fn common(v: &mut Violations, now: DateTime<Utc>, event_id: &str, occurred_at: &str, corrects: &str) -> Common {
    let event_id = v.required("event_id", event_id, EventId::parse);
    let occurred_at = v.required("occurred_at", occurred_at, |raw| parse_instant(raw, now));
    let corrects = v.optional("corrects_event_id", corrects, EventId::parse);
    if let (Some(id), Some(corrected)) = (&event_id, &corrects)
        && id == corrected
    {
        v.push("corrects_event_id", "correction.self", "an event cannot correct itself");
    }
    Common { event_id, occurred_at, corrects }
}

/// The identifiers of the person, their subject keys (strongest first) and personal data.
struct PersonParts {
    linked_keys: Vec<SubjectKey>,
}

fn person(
    v: &mut Violations,
    keys: &SubjectKeys,
    person: Option<&proto::Person>,
    household: Option<(&Organisme, &Matricule)>,
    personal: &mut PersonalData,
) -> PersonParts {
    let mut linked_keys = Vec::new();
    let Some(p) = person else {
        v.push("person", "required", "say who the fact is about: nir, france_travail_id or departement_id");
        return PersonParts { linked_keys };
    };
    let mut any_identifier = false;
    if !p.nir.trim().is_empty() {
        any_identifier = true;
        if let Some(nir) = v.check("person.nir", Nir::parse(&p.nir)) {
            linked_keys.push(keys.nir(&nir));
            personal.nir = Some(nir.with_key());
        }
    }
    if !p.france_travail_id.trim().is_empty() {
        any_identifier = true;
        if let Some(id) = v.check("person.france_travail_id", FranceTravailId::parse(&p.france_travail_id)) {
            linked_keys.push(keys.france_travail(&id));
            personal.france_travail_id = Some(id.as_str().to_owned());
        }
    }
    match (p.departement_id.trim().is_empty(), p.departement_id_code.trim().is_empty()) {
        (true, true) => {}
        (false, true) => v.push(
            "person.departement_id_code",
            "required",
            "a département id is unique within its département only: give the département code too",
        ),
        (true, false) => {
            v.push("person.departement_id", "required", "departement_id_code is given without departement_id")
        }
        (false, false) => {
            any_identifier = true;
            let id = v.check("person.departement_id", DepartementInternalId::parse(&p.departement_id));
            let code = v.check("person.departement_id_code", DepartementCode::parse(&p.departement_id_code));
            if let (Some(id), Some(code)) = (id, code) {
                linked_keys.push(keys.departement(&code, &id));
                personal.departement_id = Some(id.as_str().to_owned());
                personal.departement_id_code = Some(code.as_str().to_owned());
            }
        }
    }
    personal.idassedic = v.optional("person.idassedic", &p.idassedic, Idassedic::parse).map(|i| i.as_str().to_owned());
    personal.nom = v.text("person.nom", &p.nom, 200);
    personal.prenoms = v.text("person.prenoms", &p.prenoms, 200);
    personal.date_naissance = v.optional("person.date_naissance", &p.date_naissance, parse_date);
    if !any_identifier {
        match (household, &personal.nom, &personal.prenoms, personal.date_naissance) {
            (Some((organisme, matricule)), Some(nom), Some(prenoms), Some(date_naissance)) => {
                linked_keys.push(keys.civil(organisme, matricule, nom, prenoms, date_naissance));
            }
            _ => v.push(
                "person",
                "person.identifier",
                "give at least one identifier: nir, france_travail_id or departement_id (a member of a CAF/MSA household without any: nom, prenoms and date_naissance)",
            ),
        }
    }
    PersonParts { linked_keys }
}

/// How an ambiguous receiving authority is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ambiguous {
    /// Refused: the fact must say where it belongs.
    Refuse,
    /// Held "à affecter" (a CAF/MSA dossier's fact: never lost for want of a territory).
    Hold,
}

/// Where the fact belongs: its RSA authority (or "à affecter") and commune.
fn location(
    v: &mut Violations,
    location: Option<&proto::Location>,
    required: bool,
    ambiguous: Ambiguous,
) -> (Option<Placement>, Option<CommuneCode>) {
    let Some(l) = location else {
        if required {
            v.push("location", "required", "say where the fact belongs: receiving_authority or commune");
        }
        return (None, None);
    };
    let commune = v.optional("location.commune", &l.commune, CommuneCode::parse);
    if !l.commune.trim().is_empty() && commune.is_none() {
        return (None, None);
    }
    let receiving = (!l.receiving_authority.trim().is_empty()).then_some(l.receiving_authority.as_str());
    if receiving.is_none() && commune.is_none() && !required {
        return (None, None);
    }
    let field = if receiving.is_some() { "location.receiving_authority" } else { "location" };
    let placement = match ambiguous {
        Ambiguous::Hold => Authority::place(receiving, commune.as_ref()),
        Ambiguous::Refuse => Authority::locate(receiving, commune.as_ref()).map(Placement::Authority),
    };
    (v.check(field, placement), commune)
}

fn motif(v: &mut Violations, field: &str, list: MotifList, raw: &str) -> Option<Motif> {
    v.optional(field, raw, |r| Motif::parse(list, r))
}

fn required_motif(v: &mut Violations, field: &str, list: MotifList, raw: &str) -> Option<Motif> {
    v.required(field, raw, |r| Motif::parse(list, r))
}

fn agent(
    v: &mut Violations,
    field: &str,
    agent: Option<&proto::Agent>,
    personal: &mut PersonalData,
) -> Option<AgentRef> {
    let Some(a) = agent else {
        v.push(field, "required", "the référent: uid, email and the SIRET of their structure");
        return None;
    };
    let uid = v.required(&format!("{field}.uid"), &a.uid, AgentUid::parse);
    let email = v.required(&format!("{field}.email"), &a.email, Email::parse);
    let siret = v.required(&format!("{field}.siret"), &a.siret, Siret::parse);
    personal.referent_email = email.map(|e| e.as_str().to_owned());
    Some(AgentRef { uid: uid?.as_str().to_owned(), siret: siret?.as_str().to_owned() })
}

fn retraction(
    v: &mut Violations,
    r: &proto::Retraction,
    personal: &mut PersonalData,
    own: Option<&EventId>,
) -> Option<Payload> {
    let retracted = v.required("retraction.retracted_event_id", &r.retracted_event_id, EventId::parse)?;
    if own == Some(&retracted) {
        v.push("retraction.retracted_event_id", "retraction.self", "an event cannot retract itself");
    }
    personal.free_text = v.text("retraction.reason", &r.reason, 2000);
    Some(Payload::Retraction { retracted_event_id: retracted })
}

/// What validation produced, field by field, before the verdict.
struct Draft {
    family: Family,
    common: Common,
    linked_keys: Vec<SubjectKey>,
    household: Option<HouseholdRef>,
    place: (Option<Placement>, Option<CommuneCode>),
    payload: Option<Payload>,
    personal: PersonalData,
}

/// The verdict: the canonical event, or every violation found.
fn finish(v: Violations, ctx: &Context<'_>, draft: Draft) -> Result<CanonicalEvent, Violations> {
    let Draft { family, common, linked_keys, household, place, payload, personal } = draft;
    if matches!(payload, Some(Payload::Retraction { .. })) && common.corrects.is_some() {
        let mut v = v;
        v.push("corrects_event_id", "correction.retraction", "a retraction cannot also be a correction");
        return Err(v);
    }
    if !v.is_empty() {
        return Err(v);
    }
    let (Some(event_id), Some(occurred_at), Some(payload), Some(subject)) =
        (common.event_id, common.occurred_at, payload, linked_keys.first().cloned())
    else {
        let mut v = v;
        v.push("", "incomplete", "the request is incomplete");
        return Err(v);
    };
    Ok(CanonicalEvent {
        family,
        envelope: Envelope {
            event_id,
            occurred_at,
            recorded_at: ctx.now,
            source: ctx.source.clone(),
            subject,
            linked_keys,
            household,
            territory: place.0.map(|placement| placement.code().to_owned()),
            commune: place.1.map(|c| c.as_str().to_owned()),
            corrects_event_id: common.corrects,
        },
        payload,
        personal,
    })
}

/// A CAF/MSA allocataire fact.
pub fn allocataire(ctx: &Context<'_>, e: &proto::AllocataireEvent) -> Result<CanonicalEvent, Violations> {
    use proto::allocataire_event::Fact;
    let mut v = Violations::default();
    let mut personal = PersonalData::default();
    let common = common(&mut v, ctx.now, &e.event_id, &e.occurred_at, &e.corrects_event_id);
    let is_retraction = matches!(e.fact, Some(Fact::Retraction(_)));
    let place = location(&mut v, e.location.as_ref(), !is_retraction, Ambiguous::Hold);

    let mut dossier = None;
    let household = match &e.household {
        None if is_retraction => None,
        None => {
            v.push("household", "required", "an allocataire fact names its CAF/MSA dossier: organisme and matricule");
            None
        }
        Some(h) => {
            let organisme = v.required("household.organisme", &h.organisme, Organisme::parse);
            let matricule = v.required("household.matricule", &h.matricule, Matricule::parse);
            let role = v.optional("household.role", &h.role, Role::parse);
            match (organisme, matricule) {
                (Some(organisme), Some(matricule)) => {
                    personal.matricule = Some(matricule.as_str().to_owned());
                    let reference = HouseholdRef {
                        key: ctx.keys.household(&organisme, &matricule),
                        organisme: organisme.as_str().to_owned(),
                        role,
                    };
                    dossier = Some((organisme, matricule));
                    Some(reference)
                }
                _ => None,
            }
        }
    };
    let who = person(&mut v, ctx.keys, e.person.as_ref(), dossier.as_ref().map(|(o, m)| (o, m)), &mut personal);

    let payload = match &e.fact {
        None => {
            v.push("fact", "required", "say what happened: one of demand_recorded, right_opened, right_suspended, right_closed, right_refused, sdd_changed, role_set, address_changed, retraction");
            None
        }
        Some(Fact::DemandRecorded(f)) => {
            personal.numero_demande = v.text("demand_recorded.numero_demande", &f.numero_demande, 32);
            v.required("demand_recorded.date_demande", &f.date_demande, parse_date)
                .map(|date_demande| Payload::RsaDemandRecorded { date_demande })
        }
        Some(Fact::RightOpened(f)) => Some(Payload::RsaRightOpened {
            date_ouverture: v.optional("right_opened.date_ouverture", &f.date_ouverture, parse_date),
        }),
        Some(Fact::RightSuspended(f)) => {
            let scope = v.required("right_suspended.scope", &f.scope, SuspensionScope::parse);
            let list = match scope {
                Some(SuspensionScope::Payment) => MotifList::SuspensionVersement,
                _ => MotifList::SuspensionDroit,
            };
            let motif = required_motif(&mut v, "right_suspended.motif", list, &f.motif);
            let date_suspension = v.optional("right_suspended.date_suspension", &f.date_suspension, parse_date);
            match (scope, motif) {
                (Some(scope), Some(motif)) => Some(Payload::RsaRightSuspended { scope, motif, date_suspension }),
                _ => None,
            }
        }
        Some(Fact::RightClosed(f)) => {
            let motif = required_motif(&mut v, "right_closed.motif", MotifList::Cloture, &f.motif);
            let date_cloture = v.optional("right_closed.date_cloture", &f.date_cloture, parse_date);
            motif.map(|motif| Payload::RsaRightClosed { motif, date_cloture, prior_month: f.prior_month })
        }
        Some(Fact::RightRefused(f)) => {
            Some(Payload::RsaRightRefused { motif: motif(&mut v, "right_refused.motif", MotifList::Refus, &f.motif) })
        }
        Some(Fact::SddChanged(f)) => Some(Payload::SddChanged { soumis: f.soumis }),
        Some(Fact::RoleSet(_)) => match household.as_ref().and_then(|h| h.role) {
            Some(role) => Some(Payload::HouseholdRoleSet { role }),
            None => {
                if e.household.as_ref().is_some_and(|h| h.role.trim().is_empty()) {
                    v.push("household.role", "required", "role_set needs the role: DEM, CJT, ENF, AUT or RDO");
                }
                None
            }
        },
        Some(Fact::AddressChanged(f)) => {
            if let Some(address) = &f.address {
                if address.lines.len() > MAX_ADDRESS_LINES {
                    v.push(
                        "address_changed.address.lines",
                        "max_items",
                        format!(
                            "an address has at most {MAX_ADDRESS_LINES} lines (NF Z10-011: six lines and the country), got {}",
                            address.lines.len()
                        ),
                    );
                }
                for (index, line) in address.lines.iter().take(MAX_ADDRESS_LINES).enumerate() {
                    if let Some(line) = v.text(&format!("address_changed.address.lines[{index}]"), line, 200) {
                        personal.address_lines.push(line);
                    }
                }
                personal.code_postal = v.optional("address_changed.address.code_postal", &address.code_postal, |raw| {
                    let trimmed = raw.trim();
                    if trimmed.len() == 5 && trimmed.chars().all(|c| c.is_ascii_digit()) {
                        Ok(trimmed.to_owned())
                    } else {
                        Err(passerelle_domain::Invalid::new("code_postal.format", "a code postal is 5 digits"))
                    }
                });
                if !address.commune.trim().is_empty() {
                    v.check("address_changed.address.commune", CommuneCode::parse(&address.commune));
                }
            }
            let previous_authority =
                v.optional("address_changed.previous_authority", &f.previous_authority, Authority::parse);
            let mutation = match &f.mutation {
                None => None,
                Some(m) => {
                    let cedant =
                        v.required("address_changed.mutation.organisme_cedant", &m.organisme_cedant, Organisme::parse);
                    let prenant = v.required(
                        "address_changed.mutation.organisme_prenant",
                        &m.organisme_prenant,
                        Organisme::parse,
                    );
                    let previous_matricule =
                        v.optional("address_changed.mutation.matricule_cedant", &m.matricule_cedant, Matricule::parse);
                    match (cedant, prenant) {
                        (Some(cedant), Some(prenant)) => {
                            personal.matricule_cedant = previous_matricule.as_ref().map(|m| m.as_str().to_owned());
                            Some(Mutation {
                                previous_household_key: previous_matricule.map(|m| ctx.keys.household(&cedant, &m)),
                                organisme_cedant: cedant.as_str().to_owned(),
                                organisme_prenant: prenant.as_str().to_owned(),
                            })
                        }
                        _ => None,
                    }
                }
            };
            Some(Payload::AddressChanged {
                previous_authority: previous_authority.map(|a| a.as_str().to_owned()),
                mutation,
            })
        }
        Some(Fact::Retraction(r)) => retraction(&mut v, r, &mut personal, common.event_id.as_ref()),
    };
    finish(
        v,
        ctx,
        Draft {
            family: Family::Allocataire,
            common,
            linked_keys: who.linked_keys,
            household,
            place,
            payload,
            personal,
        },
    )
}

/// A France Travail demandeur d'emploi fact.
pub fn demandeur_emploi(ctx: &Context<'_>, e: &proto::DemandeurEmploiEvent) -> Result<CanonicalEvent, Violations> {
    use proto::demandeur_emploi_event::Fact;
    let mut v = Violations::default();
    let mut personal = PersonalData::default();
    let common = common(&mut v, ctx.now, &e.event_id, &e.occurred_at, &e.corrects_event_id);
    let who = person(&mut v, ctx.keys, e.person.as_ref(), None, &mut personal);
    let is_retraction = matches!(e.fact, Some(Fact::Retraction(_)));
    let place = location(&mut v, e.location.as_ref(), !is_retraction, Ambiguous::Refuse);
    let payload = match &e.fact {
        None => {
            v.push("fact", "required", "say what happened: one of inscription, categorie_changed, accompagnement_changed, referent_assigned, ppae_signed, cessation, radiation, retraction");
            None
        }
        Some(Fact::Inscription(f)) => {
            let categorie = v.required("inscription.categorie", &f.categorie, Categorie::parse);
            let motif = motif(&mut v, "inscription.motif", MotifList::InscriptionFt, &f.motif);
            let date_inscription = v.optional("inscription.date_inscription", &f.date_inscription, parse_date);
            categorie.map(|categorie| Payload::Inscription { categorie, motif, date_inscription })
        }
        Some(Fact::CategorieChanged(f)) => v
            .required("categorie_changed.categorie", &f.categorie, Categorie::parse)
            .map(|categorie| Payload::CategorieChanged { categorie }),
        Some(Fact::AccompagnementChanged(f)) => v
            .required("accompagnement_changed.modalite", &f.modalite, Accompagnement::parse)
            .map(|modalite| Payload::AccompagnementChanged { modalite }),
        Some(Fact::ReferentAssigned(f)) => {
            personal.referent_nom = v.text("referent_assigned.nom", &f.nom, 200);
            personal.referent_email =
                v.optional("referent_assigned.email", &f.email, Email::parse).map(|e| e.as_str().to_owned());
            if personal.referent_nom.is_none() && personal.referent_email.is_none() && f.email.trim().is_empty() {
                v.push("referent_assigned", "required", "name the France Travail référent: nom or email");
            }
            let code_safir = v.optional("referent_assigned.code_safir", &f.code_safir, |raw| {
                let trimmed = raw.trim();
                if trimmed.len() == 5 && trimmed.chars().all(|c| c.is_ascii_alphanumeric()) {
                    Ok(trimmed.to_ascii_uppercase())
                } else {
                    Err(passerelle_domain::Invalid::new("code_safir.format", "a code SAFIR is 5 characters"))
                }
            });
            Some(Payload::FtReferentAssigned { code_safir })
        }
        Some(Fact::PpaeSigned(f)) => v
            .required("ppae_signed.date_signature", &f.date_signature, parse_date)
            .map(|date_signature| Payload::PpaeSigned { date_signature }),
        Some(Fact::Cessation(f)) => Some(Payload::Cessation {
            motif: motif(&mut v, "cessation.motif", MotifList::CessationFt, &f.motif),
            date_cessation: v.optional("cessation.date_cessation", &f.date_cessation, parse_date),
        }),
        Some(Fact::Radiation(f)) => Some(Payload::Radiation {
            motif: motif(&mut v, "radiation.motif", MotifList::RadiationFt, &f.motif),
            date_radiation: v.optional("radiation.date_radiation", &f.date_radiation, parse_date),
        }),
        Some(Fact::Retraction(r)) => retraction(&mut v, r, &mut personal, common.event_id.as_ref()),
    };
    finish(
        v,
        ctx,
        Draft {
            family: Family::DemandeurEmploi,
            common,
            linked_keys: who.linked_keys,
            household: None,
            place,
            payload,
            personal,
        },
    )
}

/// Lines of a postal address, at most (NF Z10-011: six lines, and the country).
const MAX_ADDRESS_LINES: usize = 7;

/// A département fact: orientation, référent, contract, opposition, consent.
pub fn orientation(ctx: &Context<'_>, e: &proto::OrientationEvent) -> Result<CanonicalEvent, Violations> {
    use proto::orientation_event::Fact;
    let mut v = Violations::default();
    let mut personal = PersonalData::default();
    let common = common(&mut v, ctx.now, &e.event_id, &e.occurred_at, &e.corrects_event_id);
    let who = person(&mut v, ctx.keys, e.person.as_ref(), None, &mut personal);
    let is_retraction = matches!(e.fact, Some(Fact::Retraction(_)));
    let place = location(&mut v, e.location.as_ref(), !is_retraction, Ambiguous::Refuse);
    let payload = match &e.fact {
        None => {
            v.push("fact", "required", "say what happened: one of orientation_requested, orientation_decided, orientation_denied, referent_assigned, referent_ended, contract_signed, contract_ended, opposition_recorded, opposition_withdrawn, consent_given, consent_withdrawn, retraction");
            None
        }
        Some(Fact::OrientationRequested(f)) => v
            .required("orientation_requested.origine", &f.origine, OrientationOrigin::parse)
            .map(|origine| Payload::OrientationRequested { origine }),
        Some(Fact::OrientationDecided(f)) => {
            let orientation_type = v.required("orientation_decided.type", &f.r#type, OrientationType::parse);
            let structure_siret = v.optional("orientation_decided.structure_siret", &f.structure_siret, Siret::parse);
            let structure_nom = v.text("orientation_decided.structure_nom", &f.structure_nom, 200);
            let referent =
                f.referent.as_ref().and_then(|r| agent(&mut v, "orientation_decided.referent", Some(r), &mut personal));
            orientation_type.map(|orientation_type| Payload::OrientationDecided {
                orientation_type,
                structure_siret: structure_siret.map(|s| s.as_str().to_owned()),
                structure_nom,
                referent,
            })
        }
        Some(Fact::OrientationDenied(f)) => {
            personal.free_text =
                v.required_text("orientation_denied.reason", &f.reason, 2000, "say why the orientation was denied");
            Some(Payload::OrientationDenied)
        }
        Some(Fact::ReferentAssigned(f)) => {
            agent(&mut v, "referent_assigned.referent", f.referent.as_ref(), &mut personal)
                .map(|referent| Payload::ReferentAssigned { referent })
        }
        Some(Fact::ReferentEnded(f)) => v
            .required("referent_ended.uid", &f.uid, AgentUid::parse)
            .map(|uid| Payload::ReferentEnded { uid: uid.as_str().to_owned() }),
        Some(Fact::ContractSigned(f)) => {
            let kind = v.required("contract_signed.kind", &f.kind, ContractKind::parse);
            let date_debut = v.required("contract_signed.date_debut", &f.date_debut, parse_date);
            let date_fin = v.optional("contract_signed.date_fin", &f.date_fin, parse_date);
            if let (Some(debut), Some(fin)) = (date_debut, date_fin)
                && fin < debut
            {
                v.push("contract_signed.date_fin", "contract.dates", "a contract cannot end before it starts");
            }
            match (kind, date_debut) {
                (Some(kind), Some(date_debut)) => Some(Payload::ContractSigned { kind, date_debut, date_fin }),
                _ => None,
            }
        }
        Some(Fact::ContractEnded(f)) => {
            let kind = v.required("contract_ended.kind", &f.kind, ContractKind::parse);
            let date_fin = v.required("contract_ended.date_fin", &f.date_fin, parse_date);
            match (kind, date_fin) {
                (Some(kind), Some(date_fin)) => Some(Payload::ContractEnded { kind, date_fin }),
                _ => None,
            }
        }
        Some(Fact::OppositionRecorded(_)) => Some(Payload::OppositionRecorded),
        Some(Fact::OppositionWithdrawn(_)) => Some(Payload::OppositionWithdrawn),
        Some(Fact::ConsentGiven(_)) => Some(Payload::ConsentGiven),
        Some(Fact::ConsentWithdrawn(_)) => Some(Payload::ConsentWithdrawn),
        Some(Fact::Retraction(r)) => retraction(&mut v, r, &mut personal, common.event_id.as_ref()),
    };
    finish(
        v,
        ctx,
        Draft {
            family: Family::Orientation,
            common,
            linked_keys: who.linked_keys,
            household: None,
            place,
            payload,
            personal,
        },
    )
}

/// Items of a diagnostic or a plan, at most (a diagnostic lists situations, a plan objectives
/// and actions): more is a mistake of the pusher, not a parcours.
const MAX_SITUATIONS: usize = 50;
const MAX_OBJECTIVES: usize = 20;
const MAX_ACTIONS: usize = 50;
/// Longest label of a situation, an objective or an action.
const MAX_LABEL: usize = 300;

/// A fact of the parcours: diagnostic, engagement plan, rendez-vous, sanction. Every label and
/// situation goes to the sealed personal data; the payload keeps dates, statuses and numbers.
pub fn parcours(ctx: &Context<'_>, e: &proto::ParcoursEvent) -> Result<CanonicalEvent, Violations> {
    use passerelle_domain::parcours::{
        ActionDetail, ActionStatus, DEFAULT_WEEKLY_HOURS, HoursMotif, NiveauQualification, Objective, ParcoursDetail,
        PlanAction, RendezVousObjet, SituationNoted, Theme, known_situation, parse_item_id, parse_rome,
    };
    use proto::parcours_event::Fact;
    let mut v = Violations::default();
    let mut personal = PersonalData::default();
    let mut detail = ParcoursDetail::default();
    let common = common(&mut v, ctx.now, &e.event_id, &e.occurred_at, &e.corrects_event_id);
    let who = person(&mut v, ctx.keys, e.person.as_ref(), None, &mut personal);
    let place = location(&mut v, e.location.as_ref(), false, Ambiguous::Refuse);
    let payload = match &e.fact {
        None => {
            v.push("fact", "required", "say what happened: one of diagnostic_recorded, engagement_plan_set, action_status_changed, activity_hours_declared, rendez_vous_convoked, rendez_vous_honoured, rendez_vous_missed, sanction_decided, sanction_lifted, retraction");
            None
        }
        Some(Fact::DiagnosticRecorded(f)) => {
            detail.dernier_emploi = v.text("diagnostic_recorded.dernier_emploi", &f.dernier_emploi, 200);
            detail.experience = v.text("diagnostic_recorded.experience", &f.experience, 500);
            let rome_code = v.optional("diagnostic_recorded.rome_code", &f.rome_code, parse_rome);
            let niveau_qualification = v.optional(
                "diagnostic_recorded.niveau_qualification",
                &f.niveau_qualification,
                NiveauQualification::parse,
            );
            if f.situations.len() > MAX_SITUATIONS {
                v.push("diagnostic_recorded.situations", "list.length", format!("at most {MAX_SITUATIONS} situations"));
            }
            for (index, situation) in f.situations.iter().take(MAX_SITUATIONS).enumerate() {
                let field = |name: &str| format!("diagnostic_recorded.situations[{index}].{name}");
                let theme = v.required(&field("theme"), &situation.theme, Theme::parse);
                let label = v.required_text(&field("label"), &situation.label, MAX_LABEL, "the situation, in words");
                let noted_on = v.required(&field("noted_on"), &situation.noted_on, parse_date);
                let noted_by = v.required(&field("noted_by"), &situation.noted_by, AgentUid::parse);
                if let (Some(theme), Some(label), Some(noted_on), Some(noted_by)) = (theme, label, noted_on, noted_by) {
                    detail.situations.push(SituationNoted {
                        theme,
                        known: known_situation(theme, &label),
                        label,
                        sensitive: situation.sensitive || theme.sensitive(),
                        noted_on,
                        noted_by: noted_by.as_str().to_owned(),
                    });
                }
            }
            Some(Payload::DiagnosticRecorded { rome_code, niveau_qualification })
        }
        Some(Fact::EngagementPlanSet(f)) => {
            let signed_on = v.optional("engagement_plan_set.signed_on", &f.signed_on, parse_date);
            let revised_on = v.optional("engagement_plan_set.revised_on", &f.revised_on, parse_date);
            if let (Some(signed), Some(revised)) = (signed_on, revised_on)
                && revised < signed
            {
                v.push("engagement_plan_set.revised_on", "plan.dates", "a plan cannot be revised before it is signed");
            }
            let weekly_hours = match f.weekly_hours {
                None => Some(DEFAULT_WEEKLY_HOURS),
                Some(hours) if hours <= 35 => u8::try_from(hours).ok(),
                Some(_) => {
                    v.push("engagement_plan_set.weekly_hours", "hours.range", "0 to 35 hours a week");
                    None
                }
            };
            detail.hours_motif = v.optional("engagement_plan_set.hours_motif", &f.hours_motif, HoursMotif::parse);
            if weekly_hours.is_some_and(|hours| hours < DEFAULT_WEEKLY_HOURS) && detail.hours_motif.is_none() {
                v.push(
                    "engagement_plan_set.hours_motif",
                    "required",
                    "fewer than 15 hours a week (0: exempted) needs its motif: SANTE, HANDICAP, PARENT_ISOLE, AIDANT or AUTRE",
                );
            }
            if f.objectives.len() > MAX_OBJECTIVES {
                v.push("engagement_plan_set.objectives", "list.length", format!("at most {MAX_OBJECTIVES} objectives"));
            }
            for (index, objective) in f.objectives.iter().take(MAX_OBJECTIVES).enumerate() {
                let field = |name: &str| format!("engagement_plan_set.objectives[{index}].{name}");
                let theme = v.required(&field("theme"), &objective.theme, Theme::parse);
                let label = v.required_text(&field("label"), &objective.label, MAX_LABEL, "the objective, in words");
                if let (Some(theme), Some(label)) = (theme, label) {
                    detail.objectives.push(Objective { theme, label });
                }
            }
            if f.actions.len() > MAX_ACTIONS {
                v.push("engagement_plan_set.actions", "list.length", format!("at most {MAX_ACTIONS} actions"));
            }
            let mut actions = Vec::new();
            for (index, action) in f.actions.iter().take(MAX_ACTIONS).enumerate() {
                let field = |name: &str| format!("engagement_plan_set.actions[{index}].{name}");
                let action_id = v.required(&field("action_id"), &action.action_id, parse_item_id);
                if let Some(id) = &action_id
                    && actions.iter().any(|a: &PlanAction| &a.action_id == id)
                {
                    v.push(field("action_id"), "action.duplicate", "two actions of the plan have this id");
                }
                let theme = v.required(&field("theme"), &action.theme, Theme::parse);
                let label = v.required_text(&field("label"), &action.label, MAX_LABEL, "the action, in words");
                let status = v.required(&field("status"), &action.status, ActionStatus::parse);
                let start = v.optional(&field("date_debut"), &action.date_debut, parse_date);
                let end = v.optional(&field("date_fin"), &action.date_fin, parse_date);
                if let (Some(start), Some(end)) = (start, end)
                    && end < start
                {
                    v.push(field("date_fin"), "action.dates", "an action cannot end before it starts");
                }
                let prescriber = v.optional(&field("prescriber_siret"), &action.prescriber_siret, Siret::parse);
                if let (Some(action_id), Some(theme), Some(label), Some(status)) = (action_id, theme, label, status) {
                    detail.actions.push(ActionDetail { action_id: action_id.clone(), theme, label });
                    actions.push(PlanAction {
                        action_id,
                        status,
                        start,
                        end,
                        prescriber_siret: prescriber.map(|s| s.as_str().to_owned()),
                    });
                }
            }
            weekly_hours.map(|weekly_hours| Payload::EngagementPlanSet { signed_on, revised_on, weekly_hours, actions })
        }
        Some(Fact::ActionStatusChanged(f)) => {
            let action_id = v.required("action_status_changed.action_id", &f.action_id, parse_item_id);
            let status = v.required("action_status_changed.status", &f.status, ActionStatus::parse);
            match (action_id, status) {
                (Some(action_id), Some(status)) => Some(Payload::ActionStatusChanged { action_id, status }),
                _ => None,
            }
        }
        Some(Fact::ActivityHoursDeclared(f)) => {
            let month = v.required("activity_hours_declared.month", &f.month, |raw| match raw.trim() {
                month if month.len() == 7 => parse_date(&format!("{month}-01")),
                _ => Err(passerelle_domain::Invalid::new("month.format", "a month is written YYYY-MM (2026-05)")),
            });
            if f.hours > 744 {
                v.push("activity_hours_declared.hours", "hours.range", "at most 744 hours in a month");
            }
            match (month, u16::try_from(f.hours).ok().filter(|hours| *hours <= 744)) {
                (Some(month), Some(hours)) => Some(Payload::ActivityHoursDeclared { month, hours }),
                _ => None,
            }
        }
        Some(Fact::RendezVousConvoked(f)) => {
            let rdv_id = v.required("rendez_vous_convoked.rdv_id", &f.rdv_id, parse_item_id);
            // A rendez-vous may be set well ahead: the one-day bound of occurred_at is not its.
            let at = v.required("rendez_vous_convoked.at", &f.at, |raw| {
                parse_instant(raw, ctx.now + chrono::Duration::days(366))
            });
            let structure = v.required("rendez_vous_convoked.structure_siret", &f.structure_siret, Siret::parse);
            let objet = v.required("rendez_vous_convoked.objet", &f.objet, RendezVousObjet::parse);
            match (rdv_id, at, structure, objet) {
                (Some(rdv_id), Some(at), Some(structure), Some(objet)) => Some(Payload::RendezVousConvoked {
                    rdv_id,
                    at,
                    structure_siret: structure.as_str().to_owned(),
                    objet,
                }),
                _ => None,
            }
        }
        Some(Fact::RendezVousHonoured(f)) => v
            .required("rendez_vous_honoured.rdv_id", &f.rdv_id, parse_item_id)
            .map(|rdv_id| Payload::RendezVousHonoured { rdv_id }),
        Some(Fact::RendezVousMissed(f)) => v
            .required("rendez_vous_missed.rdv_id", &f.rdv_id, parse_item_id)
            .map(|rdv_id| Payload::RendezVousMissed { rdv_id, excused: f.excused }),
        Some(Fact::SanctionDecided(f)) => {
            let sanction_id = v.required("sanction_decided.sanction_id", &f.sanction_id, parse_item_id);
            let share = u8::try_from(f.share_percent).ok().filter(|share| (1..=100).contains(share));
            if share.is_none() {
                v.push("sanction_decided.share_percent", "sanction.share", "the share suspended: 1 to 100 (%)");
            }
            let months = u8::try_from(f.duration_months).ok().filter(|months| (1..=12).contains(months));
            if months.is_none() {
                v.push("sanction_decided.duration_months", "sanction.duration", "1 to 12 months");
            }
            let start = v.required("sanction_decided.date_debut", &f.date_debut, parse_date);
            detail.motif =
                v.required_text("sanction_decided.motif", &f.motif, 500, "say why the allowance is suspended");
            match (sanction_id, share, months, start) {
                (Some(sanction_id), Some(share_percent), Some(duration_months), Some(start)) => {
                    Some(Payload::SanctionDecided { sanction_id, share_percent, duration_months, start })
                }
                _ => None,
            }
        }
        Some(Fact::SanctionLifted(f)) => {
            let sanction_id = v.required("sanction_lifted.sanction_id", &f.sanction_id, parse_item_id);
            let lifted_on = v.required("sanction_lifted.date_levee", &f.date_levee, parse_date);
            match (sanction_id, lifted_on) {
                (Some(sanction_id), Some(lifted_on)) => {
                    Some(Payload::SanctionLifted { sanction_id, lifted_on, back_payment: f.back_payment })
                }
                _ => None,
            }
        }
        Some(Fact::Retraction(r)) => retraction(&mut v, r, &mut personal, common.event_id.as_ref()),
    };
    if !detail.is_empty() {
        personal.parcours = Some(detail);
    }
    finish(
        v,
        ctx,
        Draft {
            family: Family::Parcours,
            common,
            linked_keys: who.linked_keys,
            household: None,
            place,
            payload,
            personal,
        },
    )
}

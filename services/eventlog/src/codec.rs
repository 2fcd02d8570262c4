//! Canonical events to Avro values and back, following the committed schemas.

use std::collections::HashMap;

use apache_avro::{Schema, types::Value};
use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::{
    Accompagnement, Categorie, ContractKind, EventId, Motif, OrientationOrigin, OrientationType, Role, SuspensionScope,
    event::{AgentRef, Envelope, Family, HouseholdRef, InstitutionKind, Mutation, Payload, Source, SubjectKey},
    parcours::{ActionStatus, NiveauQualification, PlanAction, RendezVousObjet},
};
use uuid::Uuid;

use crate::{Error, shredding::Sealed};

/// The branches of each family's `payload` union, in schema order.
pub fn payload_branches(family: Family) -> &'static [&'static str] {
    match family {
        Family::Allocataire => &[
            "RsaDemandRecorded",
            "RsaRightOpened",
            "RsaRightSuspended",
            "RsaRightClosed",
            "RsaRightRefused",
            "SddChanged",
            "HouseholdRoleSet",
            "AddressChanged",
            "Retraction",
        ],
        Family::DemandeurEmploi => &[
            "Inscription",
            "CategorieChanged",
            "AccompagnementChanged",
            "FtReferentAssigned",
            "PpaeSigned",
            "Cessation",
            "Radiation",
            "Retraction",
        ],
        Family::Orientation => &[
            "OrientationRequested",
            "OrientationDecided",
            "OrientationDenied",
            "ReferentAssigned",
            "ReferentEnded",
            "ContractSigned",
            "ContractEnded",
            "OppositionRecorded",
            "OppositionWithdrawn",
            "ConsentGiven",
            "ConsentWithdrawn",
            "Retraction",
        ],
        Family::Parcours => &[
            "DiagnosticRecorded",
            "EngagementPlanSet",
            "ActionStatusChanged",
            "ActivityHoursDeclared",
            "RendezVousConvoked",
            "RendezVousHonoured",
            "RendezVousMissed",
            "SanctionDecided",
            "SanctionLifted",
            "Retraction",
        ],
    }
}

/// An event as it travels on the log: envelope and payload in clear, personal data sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub family: Family,
    pub envelope: Envelope,
    pub payload: Payload,
    pub personal: Option<Sealed>,
}

fn string(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

fn optional(value: Option<Value>) -> Value {
    match value {
        Some(inner) => Value::Union(1, Box::new(inner)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn date(value: NaiveDate) -> Value {
    Value::Date(passerelle_domain::dates::days_since_epoch(value))
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(name, value)| (name.to_owned(), value)).collect())
}

fn motif(value: &Motif) -> Value {
    record(vec![("code", string(&value.code)), ("known", Value::Boolean(value.known))])
}

fn agent(value: &AgentRef) -> Value {
    record(vec![("uid", string(&value.uid)), ("siret", string(&value.siret))])
}

fn payload_record(payload: &Payload) -> (&'static str, Value) {
    let state = || string(payload.right_state().map(|s| s.code()).unwrap_or_default());
    match payload {
        Payload::RsaDemandRecorded { date_demande } => {
            ("RsaDemandRecorded", record(vec![("right_state", state()), ("date_demande", date(*date_demande))]))
        }
        Payload::RsaRightOpened { date_ouverture } => (
            "RsaRightOpened",
            record(vec![("right_state", state()), ("date_ouverture", optional(date_ouverture.map(date)))]),
        ),
        Payload::RsaRightSuspended { scope, motif: m, date_suspension } => (
            "RsaRightSuspended",
            record(vec![
                ("right_state", state()),
                ("scope", string(scope.code())),
                ("motif", motif(m)),
                ("date_suspension", optional(date_suspension.map(date))),
            ]),
        ),
        Payload::RsaRightClosed { motif: m, date_cloture, .. } => (
            "RsaRightClosed",
            record(vec![
                ("right_state", state()),
                ("motif", motif(m)),
                ("date_cloture", optional(date_cloture.map(date))),
            ]),
        ),
        Payload::RsaRightRefused { motif: m } => {
            ("RsaRightRefused", record(vec![("right_state", state()), ("motif", optional(m.as_ref().map(motif)))]))
        }
        Payload::SddChanged { soumis } => ("SddChanged", record(vec![("soumis", Value::Boolean(*soumis))])),
        Payload::HouseholdRoleSet { role } => ("HouseholdRoleSet", record(vec![("role", string(role.code()))])),
        Payload::AddressChanged { previous_authority, mutation } => (
            "AddressChanged",
            record(vec![
                ("previous_authority", optional(previous_authority.clone().map(string))),
                (
                    "mutation",
                    optional(mutation.as_ref().map(|m| {
                        record(vec![
                            ("organisme_cedant", string(&m.organisme_cedant)),
                            ("organisme_prenant", string(&m.organisme_prenant)),
                            (
                                "previous_household_key",
                                optional(m.previous_household_key.as_ref().map(|k| string(k.as_str()))),
                            ),
                        ])
                    })),
                ),
            ]),
        ),
        Payload::Inscription { categorie, motif: m, date_inscription } => (
            "Inscription",
            record(vec![
                ("categorie", string(categorie.code())),
                ("motif", optional(m.as_ref().map(motif))),
                ("date_inscription", optional(date_inscription.map(date))),
            ]),
        ),
        Payload::CategorieChanged { categorie } => {
            ("CategorieChanged", record(vec![("categorie", string(categorie.code()))]))
        }
        Payload::AccompagnementChanged { modalite } => {
            ("AccompagnementChanged", record(vec![("modalite", string(modalite.code()))]))
        }
        Payload::FtReferentAssigned { code_safir } => {
            ("FtReferentAssigned", record(vec![("code_safir", optional(code_safir.clone().map(string)))]))
        }
        Payload::PpaeSigned { date_signature } => {
            ("PpaeSigned", record(vec![("date_signature", date(*date_signature))]))
        }
        Payload::Cessation { motif: m, date_cessation } => (
            "Cessation",
            record(vec![
                ("motif", optional(m.as_ref().map(motif))),
                ("date_cessation", optional(date_cessation.map(date))),
            ]),
        ),
        Payload::Radiation { motif: m, date_radiation } => (
            "Radiation",
            record(vec![
                ("motif", optional(m.as_ref().map(motif))),
                ("date_radiation", optional(date_radiation.map(date))),
            ]),
        ),
        Payload::OrientationRequested { origine } => {
            ("OrientationRequested", record(vec![("origine", string(origine.code()))]))
        }
        Payload::OrientationDecided { orientation_type, structure_siret, structure_nom, referent } => (
            "OrientationDecided",
            record(vec![
                ("orientation_type", string(orientation_type.code())),
                ("structure_siret", optional(structure_siret.clone().map(string))),
                ("structure_nom", optional(structure_nom.clone().map(string))),
                ("referent", optional(referent.as_ref().map(agent))),
            ]),
        ),
        Payload::OrientationDenied => ("OrientationDenied", record(vec![])),
        Payload::ReferentAssigned { referent } => ("ReferentAssigned", record(vec![("referent", agent(referent))])),
        Payload::ReferentEnded { uid } => ("ReferentEnded", record(vec![("uid", string(uid))])),
        Payload::ContractSigned { kind, date_debut, date_fin } => (
            "ContractSigned",
            record(vec![
                ("kind", string(kind.code())),
                ("date_debut", date(*date_debut)),
                ("date_fin", optional(date_fin.map(date))),
            ]),
        ),
        Payload::ContractEnded { kind, date_fin } => {
            ("ContractEnded", record(vec![("kind", string(kind.code())), ("date_fin", date(*date_fin))]))
        }
        Payload::OppositionRecorded => ("OppositionRecorded", record(vec![])),
        Payload::OppositionWithdrawn => ("OppositionWithdrawn", record(vec![])),
        Payload::ConsentGiven => ("ConsentGiven", record(vec![])),
        Payload::ConsentWithdrawn => ("ConsentWithdrawn", record(vec![])),
        Payload::DiagnosticRecorded { rome_code, niveau_qualification } => (
            "DiagnosticRecorded",
            record(vec![
                ("rome_code", optional(rome_code.clone().map(string))),
                ("niveau_qualification", optional(niveau_qualification.map(|n| string(n.code())))),
            ]),
        ),
        Payload::EngagementPlanSet { signed_on, revised_on, weekly_hours, actions } => (
            "EngagementPlanSet",
            record(vec![
                ("signed_on", optional(signed_on.map(date))),
                ("revised_on", optional(revised_on.map(date))),
                ("weekly_hours", Value::Int(i32::from(*weekly_hours))),
                (
                    "actions",
                    Value::Array(
                        actions
                            .iter()
                            .map(|action| {
                                record(vec![
                                    ("action_id", string(&action.action_id)),
                                    ("status", string(action.status.code())),
                                    ("start", optional(action.start.map(date))),
                                    ("end", optional(action.end.map(date))),
                                    ("prescriber_siret", optional(action.prescriber_siret.clone().map(string))),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        ),
        Payload::ActionStatusChanged { action_id, status } => {
            ("ActionStatusChanged", record(vec![("action_id", string(action_id)), ("status", string(status.code()))]))
        }
        Payload::ActivityHoursDeclared { month, hours } => {
            ("ActivityHoursDeclared", record(vec![("month", date(*month)), ("hours", Value::Int(i32::from(*hours)))]))
        }
        Payload::RendezVousConvoked { rdv_id, at, structure_siret, objet } => (
            "RendezVousConvoked",
            record(vec![
                ("rdv_id", string(rdv_id)),
                ("at", Value::TimestampMillis(at.timestamp_millis())),
                ("structure_siret", string(structure_siret)),
                ("objet", string(objet.code())),
            ]),
        ),
        Payload::RendezVousHonoured { rdv_id } => ("RendezVousHonoured", record(vec![("rdv_id", string(rdv_id))])),
        Payload::RendezVousMissed { rdv_id, excused } => {
            ("RendezVousMissed", record(vec![("rdv_id", string(rdv_id)), ("excused", Value::Boolean(*excused))]))
        }
        Payload::SanctionDecided { sanction_id, share_percent, duration_months, start } => (
            "SanctionDecided",
            record(vec![
                ("sanction_id", string(sanction_id)),
                ("share_percent", Value::Int(i32::from(*share_percent))),
                ("duration_months", Value::Int(i32::from(*duration_months))),
                ("start", date(*start)),
            ]),
        ),
        Payload::SanctionLifted { sanction_id, lifted_on, back_payment } => (
            "SanctionLifted",
            record(vec![
                ("sanction_id", string(sanction_id)),
                ("lifted_on", date(*lifted_on)),
                ("back_payment", Value::Boolean(*back_payment)),
            ]),
        ),
        Payload::Retraction { retracted_event_id } => {
            ("Retraction", record(vec![("retracted_event_id", string(retracted_event_id.as_str()))]))
        }
    }
}

/// Encodes an event to an Avro datum of `schema` (the family's latest committed schema).
pub fn encode(event: &LoggedEvent, schema: &Schema) -> Result<Vec<u8>, Error> {
    let envelope = &event.envelope;
    let (branch, payload) = payload_record(&event.payload);
    let index = payload_branches(event.family)
        .iter()
        .position(|name| *name == branch)
        .ok_or_else(|| Error::Avro(format!("{branch} is not an event of the {} family", event.family.label())))?;
    let value = record(vec![
        ("event_id", string(envelope.event_id.as_str())),
        ("event_type", string(event.payload.event_type())),
        ("occurred_at", Value::TimestampMillis(envelope.occurred_at.timestamp_millis())),
        ("recorded_at", Value::TimestampMillis(envelope.recorded_at.timestamp_millis())),
        (
            "source",
            record(vec![
                ("institution", string(&envelope.source.institution)),
                ("institution_kind", string(envelope.source.kind.code())),
                ("relayed_by", optional(envelope.source.relayed_by.clone().map(string))),
                ("relay_file", optional(envelope.source.relay_file.clone().map(string))),
            ]),
        ),
        (
            "subject",
            record(vec![
                ("key", string(envelope.subject.as_str())),
                ("linked_keys", Value::Array(envelope.linked_keys.iter().map(|k| string(k.as_str())).collect())),
            ]),
        ),
        (
            "household",
            optional(envelope.household.as_ref().map(|h| {
                record(vec![
                    ("key", string(h.key.as_str())),
                    ("organisme", string(&h.organisme)),
                    ("role", optional(h.role.map(|r| string(r.code())))),
                ])
            })),
        ),
        ("territory", optional(envelope.territory.clone().map(string))),
        ("commune", optional(envelope.commune.clone().map(string))),
        ("corrects_event_id", optional(envelope.corrects_event_id.as_ref().map(|e| string(e.as_str())))),
        (
            "personal",
            optional(event.personal.as_ref().map(|sealed| {
                record(vec![
                    ("key_id", string(sealed.key_id.to_string())),
                    ("nonce", Value::Bytes(sealed.nonce.clone())),
                    ("ciphertext", Value::Bytes(sealed.ciphertext.clone())),
                ])
            })),
        ),
        ("payload", Value::Union(u32::try_from(index).unwrap_or(u32::MAX), Box::new(payload))),
    ]);
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?;
    Ok(writer.write_value_to_vec(value)?)
}

/// The names of the `payload` union's branches in a schema, in order.
fn payload_branch_names(writer: &Schema) -> Result<Vec<String>, Error> {
    let Schema::Record(record) = writer else { return Err(Error::Decode("the event schema is not a record".into())) };
    let field = record
        .fields
        .iter()
        .find(|field| field.name == "payload")
        .ok_or_else(|| Error::Decode("the event schema has no payload".into()))?;
    let Schema::Union(union) = &field.schema else { return Err(Error::Decode("payload is not a union".into())) };
    Ok(union.variants().iter().map(|variant| variant.name().map(|n| n.name().to_owned()).unwrap_or_default()).collect())
}

/// Decodes a datum written with `writer` (the schema its framing names, any committed
/// version) into the canonical event.
///
/// The datum is read with its writer schema only, and the payload branch is found by the
/// writer's own branch name. Avro schema resolution is deliberately not used for the payload
/// union: apache-avro resolves a union value to the first reader branch it fits structurally,
/// and a record whose fields all have defaults fits every record (a PpaeSigned read as an
/// FtReferentAssigned). Fields added by later versions read as absent.
pub fn decode(family: Family, datum: &[u8], writer: &Schema) -> Result<LoggedEvent, Error> {
    let mut bytes = datum;
    let datum_reader = apache_avro::reader::datum::GenericDatumReader::builder(writer).build()?;
    let value = datum_reader.read_value(&mut bytes)?;
    let branches = payload_branch_names(writer)?;
    let top = Fields::of(value)?;
    let source = top.record("source")?;
    let subject = top.record("subject")?;
    let envelope = Envelope {
        event_id: parse_event_id(&top.string("event_id")?)?,
        occurred_at: top.instant("occurred_at")?,
        recorded_at: top.instant("recorded_at")?,
        source: Source {
            institution: source.string("institution")?,
            kind: match source.string("institution_kind")?.as_str() {
                "CAF" => InstitutionKind::Caf,
                "MSA" => InstitutionKind::Msa,
                "FRANCE_TRAVAIL" => InstitutionKind::FranceTravail,
                "DEPARTEMENT" => InstitutionKind::Departement,
                "PERSONNE" => InstitutionKind::Personne,
                "STRUCTURE" => InstitutionKind::Structure,
                other => return Err(Error::Decode(format!("unknown institution kind {other:?}"))),
            },
            relayed_by: source.opt_string("relayed_by")?,
            relay_file: source.opt_string("relay_file")?,
        },
        subject: SubjectKey(subject.string("key")?),
        linked_keys: match subject.get("linked_keys")? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(key) => Ok(SubjectKey(key)),
                    other => Err(Error::Decode(format!("linked key {other:?}"))),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(Error::Decode(format!("linked_keys {other:?}"))),
        },
        household: match top.opt_record("household")? {
            Some(household) => Some(HouseholdRef {
                key: SubjectKey(household.string("key")?),
                organisme: household.string("organisme")?,
                role: household.opt_string("role")?.map(|r| Role::parse(&r)).transpose().map_err(invalid)?,
            }),
            None => None,
        },
        territory: top.opt_string("territory")?,
        commune: top.opt_string("commune")?,
        corrects_event_id: top.opt_string("corrects_event_id")?.map(|e| parse_event_id(&e)).transpose()?,
    };
    let personal = match top.opt_record("personal")? {
        Some(sealed) => Some(Sealed {
            key_id: Uuid::parse_str(&sealed.string("key_id")?).map_err(|e| Error::Decode(e.to_string()))?,
            nonce: sealed.bytes("nonce")?,
            ciphertext: sealed.bytes("ciphertext")?,
        }),
        None => None,
    };
    let (index, payload_value) = match top.get("payload")? {
        Value::Union(index, inner) => (index as usize, *inner),
        other => return Err(Error::Decode(format!("payload {other:?}"))),
    };
    let branch = branches.get(index).ok_or_else(|| Error::Decode(format!("payload branch {index} unknown")))?;
    if !payload_branches(family).contains(&branch.as_str()) {
        return Err(Error::Decode(format!("{branch} is not an event of the {} family", family.label())));
    }
    let payload = decode_payload(branch, Fields::of(payload_value)?)?;
    Ok(LoggedEvent { family, envelope, payload, personal })
}

fn invalid(error: passerelle_domain::Invalid) -> Error {
    Error::Decode(error.to_string())
}

fn parse_event_id(raw: &str) -> Result<EventId, Error> {
    EventId::parse(raw).map_err(invalid)
}

fn decode_payload(branch: &str, f: Fields) -> Result<Payload, Error> {
    let motif = |value: Option<Fields>| -> Result<Option<Motif>, Error> {
        value.map(|m| Ok(Motif { code: m.string("code")?, known: m.boolean("known")? })).transpose()
    };
    let agent =
        |a: Fields| -> Result<AgentRef, Error> { Ok(AgentRef { uid: a.string("uid")?, siret: a.string("siret")? }) };
    Ok(match branch {
        "RsaDemandRecorded" => Payload::RsaDemandRecorded { date_demande: f.date("date_demande")? },
        "RsaRightOpened" => Payload::RsaRightOpened { date_ouverture: f.opt_date("date_ouverture")? },
        "RsaRightSuspended" => Payload::RsaRightSuspended {
            scope: SuspensionScope::parse(&f.string("scope")?).map_err(invalid)?,
            motif: motif(Some(f.record("motif")?))?.ok_or_else(|| Error::Decode("motif".into()))?,
            date_suspension: f.opt_date("date_suspension")?,
        },
        "RsaRightClosed" => Payload::RsaRightClosed {
            prior_month: f.string("right_state")? == "6",
            motif: motif(Some(f.record("motif")?))?.ok_or_else(|| Error::Decode("motif".into()))?,
            date_cloture: f.opt_date("date_cloture")?,
        },
        "RsaRightRefused" => Payload::RsaRightRefused { motif: motif(f.opt_record("motif")?)? },
        "SddChanged" => Payload::SddChanged { soumis: f.boolean("soumis")? },
        "HouseholdRoleSet" => Payload::HouseholdRoleSet { role: Role::parse(&f.string("role")?).map_err(invalid)? },
        "AddressChanged" => Payload::AddressChanged {
            previous_authority: f.opt_string("previous_authority")?,
            mutation: match f.opt_record("mutation")? {
                Some(m) => Some(Mutation {
                    organisme_cedant: m.string("organisme_cedant")?,
                    organisme_prenant: m.string("organisme_prenant")?,
                    previous_household_key: m.opt_string("previous_household_key")?.map(SubjectKey),
                }),
                None => None,
            },
        },
        "Inscription" => Payload::Inscription {
            categorie: Categorie::parse(&f.string("categorie")?).map_err(invalid)?,
            motif: motif(f.opt_record("motif")?)?,
            date_inscription: f.opt_date("date_inscription")?,
        },
        "CategorieChanged" => {
            Payload::CategorieChanged { categorie: Categorie::parse(&f.string("categorie")?).map_err(invalid)? }
        }
        "AccompagnementChanged" => {
            Payload::AccompagnementChanged { modalite: Accompagnement::parse(&f.string("modalite")?).map_err(invalid)? }
        }
        "FtReferentAssigned" => Payload::FtReferentAssigned { code_safir: f.opt_string("code_safir")? },
        "PpaeSigned" => Payload::PpaeSigned { date_signature: f.date("date_signature")? },
        "Cessation" => {
            Payload::Cessation { motif: motif(f.opt_record("motif")?)?, date_cessation: f.opt_date("date_cessation")? }
        }
        "Radiation" => {
            Payload::Radiation { motif: motif(f.opt_record("motif")?)?, date_radiation: f.opt_date("date_radiation")? }
        }
        "OrientationRequested" => {
            Payload::OrientationRequested { origine: OrientationOrigin::parse(&f.string("origine")?).map_err(invalid)? }
        }
        "OrientationDecided" => Payload::OrientationDecided {
            orientation_type: OrientationType::parse(&f.string("orientation_type")?).map_err(invalid)?,
            structure_siret: f.opt_string("structure_siret")?,
            structure_nom: f.opt_string("structure_nom")?,
            referent: f.opt_record("referent")?.map(agent).transpose()?,
        },
        "OrientationDenied" => Payload::OrientationDenied,
        "ReferentAssigned" => Payload::ReferentAssigned { referent: agent(f.record("referent")?)? },
        "ReferentEnded" => Payload::ReferentEnded { uid: f.string("uid")? },
        "ContractSigned" => Payload::ContractSigned {
            kind: ContractKind::parse(&f.string("kind")?).map_err(invalid)?,
            date_debut: f.date("date_debut")?,
            date_fin: f.opt_date("date_fin")?,
        },
        "ContractEnded" => Payload::ContractEnded {
            kind: ContractKind::parse(&f.string("kind")?).map_err(invalid)?,
            date_fin: f.date("date_fin")?,
        },
        "OppositionRecorded" => Payload::OppositionRecorded,
        "OppositionWithdrawn" => Payload::OppositionWithdrawn,
        "ConsentGiven" => Payload::ConsentGiven,
        "ConsentWithdrawn" => Payload::ConsentWithdrawn,
        "DiagnosticRecorded" => Payload::DiagnosticRecorded {
            rome_code: f.opt_string("rome_code")?,
            niveau_qualification: f
                .opt_string("niveau_qualification")?
                .map(|n| NiveauQualification::parse(&n))
                .transpose()
                .map_err(invalid)?,
        },
        "EngagementPlanSet" => Payload::EngagementPlanSet {
            signed_on: f.opt_date("signed_on")?,
            revised_on: f.opt_date("revised_on")?,
            weekly_hours: f.small("weekly_hours")?,
            actions: match f.get("actions")? {
                Value::Array(items) => items
                    .into_iter()
                    .map(|item| {
                        let a = Fields::of(item)?;
                        Ok(PlanAction {
                            action_id: a.string("action_id")?,
                            status: ActionStatus::parse(&a.string("status")?).map_err(invalid)?,
                            start: a.opt_date("start")?,
                            end: a.opt_date("end")?,
                            prescriber_siret: a.opt_string("prescriber_siret")?,
                        })
                    })
                    .collect::<Result<_, Error>>()?,
                other => return Err(Error::Decode(format!("actions {other:?}"))),
            },
        },
        "ActionStatusChanged" => Payload::ActionStatusChanged {
            action_id: f.string("action_id")?,
            status: ActionStatus::parse(&f.string("status")?).map_err(invalid)?,
        },
        "ActivityHoursDeclared" => Payload::ActivityHoursDeclared { month: f.date("month")?, hours: f.small("hours")? },
        "RendezVousConvoked" => Payload::RendezVousConvoked {
            rdv_id: f.string("rdv_id")?,
            at: f.instant("at")?,
            structure_siret: f.string("structure_siret")?,
            objet: RendezVousObjet::parse(&f.string("objet")?).map_err(invalid)?,
        },
        "RendezVousHonoured" => Payload::RendezVousHonoured { rdv_id: f.string("rdv_id")? },
        "RendezVousMissed" => Payload::RendezVousMissed { rdv_id: f.string("rdv_id")?, excused: f.boolean("excused")? },
        "SanctionDecided" => Payload::SanctionDecided {
            sanction_id: f.string("sanction_id")?,
            share_percent: f.small("share_percent")?,
            duration_months: f.small("duration_months")?,
            start: f.date("start")?,
        },
        "SanctionLifted" => Payload::SanctionLifted {
            sanction_id: f.string("sanction_id")?,
            lifted_on: f.date("lifted_on")?,
            back_payment: f.boolean("back_payment")?,
        },
        "Retraction" => Payload::Retraction { retracted_event_id: parse_event_id(&f.string("retracted_event_id")?)? },
        other => return Err(Error::Decode(format!("unknown payload {other}"))),
    })
}

/// The fields of a decoded Avro record, by name.
pub(crate) struct Fields(HashMap<String, Value>);

impl Fields {
    /// A datum written with `writer`, read as a record (`what` names it in the error).
    pub(crate) fn read(datum: &[u8], writer: &Schema, what: &str) -> Result<Self, Error> {
        let mut bytes = datum;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(writer).build()?.read_value(&mut bytes)?;
        match value {
            Value::Record(_) => Self::of(value),
            _ => Err(Error::Decode(format!("{what} is a record"))),
        }
    }

    fn of(value: Value) -> Result<Self, Error> {
        match value {
            Value::Record(fields) => Ok(Self(fields.into_iter().collect())),
            other => Err(Error::Decode(format!("expected a record, got {other:?}"))),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Result<Value, Error> {
        self.0.get(name).cloned().ok_or_else(|| Error::Decode(format!("missing field {name}")))
    }

    /// An optional field: absent (written by an older version) or null read as `None`.
    fn opt(&self, name: &str) -> Result<Option<Value>, Error> {
        let Some(value) = self.0.get(name).cloned() else { return Ok(None) };
        Ok(match value {
            Value::Union(_, inner) => match *inner {
                Value::Null => None,
                value => Some(value),
            },
            Value::Null => None,
            value => Some(value),
        })
    }

    pub(crate) fn string(&self, name: &str) -> Result<String, Error> {
        as_string(name, self.get(name)?)
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, Error> {
        self.opt(name)?.map(|v| as_string(name, v)).transpose()
    }

    fn boolean(&self, name: &str) -> Result<bool, Error> {
        match self.get(name)? {
            Value::Boolean(b) => Ok(b),
            other => Err(Error::Decode(format!("{name}: expected a boolean, got {other:?}"))),
        }
    }

    /// A small whole number (hours, a share, months) written as an Avro int.
    fn small<T: TryFrom<i32>>(&self, name: &str) -> Result<T, Error> {
        match self.get(name)? {
            Value::Int(n) => T::try_from(n).map_err(|_| Error::Decode(format!("{name}: {n} out of range"))),
            other => Err(Error::Decode(format!("{name}: expected an int, got {other:?}"))),
        }
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, Error> {
        match self.get(name)? {
            Value::Bytes(b) => Ok(b),
            other => Err(Error::Decode(format!("{name}: expected bytes, got {other:?}"))),
        }
    }

    fn record(&self, name: &str) -> Result<Fields, Error> {
        Fields::of(self.get(name)?)
    }

    fn opt_record(&self, name: &str) -> Result<Option<Fields>, Error> {
        self.opt(name)?.map(Fields::of).transpose()
    }

    pub(crate) fn instant(&self, name: &str) -> Result<DateTime<Utc>, Error> {
        match self.get(name)? {
            Value::TimestampMillis(ms) | Value::Long(ms) => {
                DateTime::from_timestamp_millis(ms).ok_or_else(|| Error::Decode(format!("{name}: out of range")))
            }
            other => Err(Error::Decode(format!("{name}: expected a timestamp, got {other:?}"))),
        }
    }

    fn date(&self, name: &str) -> Result<NaiveDate, Error> {
        as_date(name, self.get(name)?)
    }

    fn opt_date(&self, name: &str) -> Result<Option<NaiveDate>, Error> {
        self.opt(name)?.map(|v| as_date(name, v)).transpose()
    }
}

fn as_string(name: &str, value: Value) -> Result<String, Error> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(Error::Decode(format!("{name}: expected a string, got {other:?}"))),
    }
}

fn as_date(name: &str, value: Value) -> Result<NaiveDate, Error> {
    match value {
        Value::Date(days) | Value::Int(days) => NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(i64::from(days))))
            .ok_or_else(|| Error::Decode(format!("{name}: out of range"))),
        other => Err(Error::Decode(format!("{name}: expected a date, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use passerelle_domain::{
        Accompagnement, Categorie, ContractKind, EventId, Motif, MotifList, OrientationOrigin, OrientationType, Role,
        SuspensionScope,
        event::{AgentRef, Envelope, Family, HouseholdRef, InstitutionKind, Mutation, Payload, Source, SubjectKey},
        parcours::{ActionStatus, NiveauQualification, PlanAction, RendezVousObjet},
    };

    use super::*;
    use crate::schemas;

    fn envelope(household: bool) -> Envelope {
        Envelope {
            event_id: EventId::parse("codec-1").expect("valid"),
            occurred_at: DateTime::from_timestamp_millis(1_790_000_000_000).expect("instant"),
            recorded_at: DateTime::from_timestamp_millis(1_790_000_100_000).expect("instant"),
            source: Source {
                institution: "cd-52".into(),
                kind: InstitutionKind::Departement,
                relayed_by: Some("cd-52".into()),
                relay_file: Some("RSABEM.xml".into()),
            },
            subject: SubjectKey("nir:01".into()),
            linked_keys: vec![SubjectKey("nir:01".into()), SubjectKey("ft:02".into())],
            household: household.then(|| HouseholdRef {
                key: SubjectKey("foyer:03".into()),
                organisme: "521".into(),
                role: Some(Role::Demandeur),
            }),
            territory: Some("52".into()),
            commune: None,
            corrects_event_id: Some(EventId::parse("codec-0").expect("valid")),
        }
    }

    fn motif(list: MotifList, code: &str) -> Motif {
        Motif::parse(list, code).expect("valid")
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().expect("date")
    }

    /// One event of every payload, with optional fields both set and absent.
    fn every_payload() -> Vec<(Family, Payload)> {
        let agent = AgentRef { uid: "agent-1".into(), siret: "73282932000074".into() };
        vec![
            (Family::Allocataire, Payload::RsaDemandRecorded { date_demande: date("2026-01-02") }),
            (Family::Allocataire, Payload::RsaRightOpened { date_ouverture: None }),
            (Family::Allocataire, Payload::RsaRightOpened { date_ouverture: Some(date("2026-01-03")) }),
            (
                Family::Allocataire,
                Payload::RsaRightSuspended {
                    scope: SuspensionScope::Payment,
                    motif: motif(MotifList::SuspensionVersement, "06"),
                    date_suspension: Some(date("2026-02-01")),
                },
            ),
            (
                Family::Allocataire,
                Payload::RsaRightClosed {
                    motif: motif(MotifList::Cloture, "ZZZ"),
                    date_cloture: None,
                    prior_month: true,
                },
            ),
            (Family::Allocataire, Payload::RsaRightRefused { motif: None }),
            (Family::Allocataire, Payload::SddChanged { soumis: false }),
            (Family::Allocataire, Payload::HouseholdRoleSet { role: Role::Enfant }),
            (
                Family::Allocataire,
                Payload::AddressChanged {
                    previous_authority: Some("51".into()),
                    mutation: Some(Mutation {
                        organisme_cedant: "511".into(),
                        organisme_prenant: "521".into(),
                        previous_household_key: Some(SubjectKey("foyer:04".into())),
                    }),
                },
            ),
            (
                Family::DemandeurEmploi,
                Payload::Inscription {
                    categorie: Categorie::Two,
                    motif: Some(motif(MotifList::InscriptionFt, "01")),
                    date_inscription: None,
                },
            ),
            (Family::DemandeurEmploi, Payload::CategorieChanged { categorie: Categorie::Five }),
            (Family::DemandeurEmploi, Payload::AccompagnementChanged { modalite: Accompagnement::Global }),
            (Family::DemandeurEmploi, Payload::FtReferentAssigned { code_safir: None }),
            (Family::DemandeurEmploi, Payload::PpaeSigned { date_signature: date("2026-03-01") }),
            (Family::DemandeurEmploi, Payload::Cessation { motif: None, date_cessation: Some(date("2026-03-02")) }),
            (
                Family::DemandeurEmploi,
                Payload::Radiation { motif: Some(motif(MotifList::RadiationFt, "AB")), date_radiation: None },
            ),
            (Family::Orientation, Payload::OrientationRequested { origine: OrientationOrigin::Demenagement }),
            (
                Family::Orientation,
                Payload::OrientationDecided {
                    orientation_type: OrientationType::Social,
                    structure_siret: None,
                    structure_nom: Some("CCAS".into()),
                    referent: Some(agent.clone()),
                },
            ),
            (Family::Orientation, Payload::OrientationDenied),
            (Family::Orientation, Payload::ReferentAssigned { referent: agent }),
            (Family::Orientation, Payload::ReferentEnded { uid: "agent-1".into() }),
            (
                Family::Orientation,
                Payload::ContractSigned { kind: ContractKind::Cer, date_debut: date("2026-04-01"), date_fin: None },
            ),
            (
                Family::Orientation,
                Payload::ContractEnded { kind: ContractKind::ContratEngagement, date_fin: date("2026-05-01") },
            ),
            (Family::Orientation, Payload::OppositionRecorded),
            (Family::Orientation, Payload::OppositionWithdrawn),
            (Family::Orientation, Payload::ConsentGiven),
            (Family::Orientation, Payload::ConsentWithdrawn),
            (
                Family::Orientation,
                Payload::Retraction { retracted_event_id: EventId::parse("codec-0").expect("valid") },
            ),
            (
                Family::DemandeurEmploi,
                Payload::Retraction { retracted_event_id: EventId::parse("codec-0").expect("valid") },
            ),
            (
                Family::Allocataire,
                Payload::Retraction { retracted_event_id: EventId::parse("codec-0").expect("valid") },
            ),
            (Family::Parcours, Payload::DiagnosticRecorded { rome_code: None, niveau_qualification: None }),
            (
                Family::Parcours,
                Payload::DiagnosticRecorded {
                    rome_code: Some("K1303".into()),
                    niveau_qualification: Some(NiveauQualification::N3),
                },
            ),
            (
                Family::Parcours,
                Payload::EngagementPlanSet {
                    signed_on: Some(date("2026-04-02")),
                    revised_on: None,
                    weekly_hours: 10,
                    actions: vec![
                        PlanAction {
                            action_id: "a-1".into(),
                            status: ActionStatus::EnCours,
                            start: Some(date("2026-04-03")),
                            end: None,
                            prescriber_siret: Some("73282932000074".into()),
                        },
                        PlanAction {
                            action_id: "a-2".into(),
                            status: ActionStatus::Prevue,
                            start: None,
                            end: Some(date("2026-06-30")),
                            prescriber_siret: None,
                        },
                    ],
                },
            ),
            (
                Family::Parcours,
                Payload::ActionStatusChanged { action_id: "a-1".into(), status: ActionStatus::Realisee },
            ),
            (Family::Parcours, Payload::ActivityHoursDeclared { month: date("2026-05-01"), hours: 62 }),
            (
                Family::Parcours,
                Payload::RendezVousConvoked {
                    rdv_id: "rdv-1".into(),
                    at: DateTime::from_timestamp_millis(1_790_500_000_000).expect("instant"),
                    structure_siret: "73282932000074".into(),
                    objet: RendezVousObjet::Accompagnement,
                },
            ),
            (Family::Parcours, Payload::RendezVousHonoured { rdv_id: "rdv-1".into() }),
            (Family::Parcours, Payload::RendezVousMissed { rdv_id: "rdv-1".into(), excused: true }),
            (
                Family::Parcours,
                Payload::SanctionDecided {
                    sanction_id: "s-1".into(),
                    share_percent: 30,
                    duration_months: 2,
                    start: date("2026-06-01"),
                },
            ),
            (
                Family::Parcours,
                Payload::SanctionLifted {
                    sanction_id: "s-1".into(),
                    lifted_on: date("2026-06-20"),
                    back_payment: true,
                },
            ),
            (Family::Parcours, Payload::Retraction { retracted_event_id: EventId::parse("codec-0").expect("valid") }),
        ]
    }

    #[test]
    fn every_payload_of_every_family_round_trips_through_its_schema() {
        let cases = every_payload();
        for family in Family::ALL {
            let schema = schemas::committed(schemas::Stream::Facts(family), schemas::CONTENT_VERSION).expect("schema");
            let covered: Vec<&str> =
                cases.iter().filter(|(f, _)| *f == family).map(|(_, p)| payload_record(p).0).collect();
            for branch in payload_branches(family) {
                assert!(covered.contains(branch), "{branch} has no round-trip case");
            }
            assert_eq!(payload_branch_names(&schema).expect("branches"), payload_branches(family));
        }
        for (family, payload) in cases {
            let event = LoggedEvent {
                family,
                envelope: envelope(family == Family::Allocataire),
                payload,
                personal: Some(Sealed { key_id: Uuid::nil(), nonce: vec![1; 12], ciphertext: vec![2, 3] }),
            };
            let schema = schemas::committed(schemas::Stream::Facts(family), schemas::CONTENT_VERSION).expect("schema");
            let datum = encode(&event, &schema).expect("encodes");
            assert_eq!(decode(family, &datum, &schema).expect("decodes"), event);
        }
    }
}

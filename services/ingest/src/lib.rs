//! The gRPC ingestion services: institutions push facts, the hub validates and normalises them
//! into canonical events and publishes them on Kafka, answering OK only once the broker
//! acknowledged.

pub mod auth;
pub mod client;
pub mod hub;
pub mod institutions;
pub mod limits;
pub mod metrics;
pub mod normalise;
pub mod reach;
pub mod scope;
pub mod service;
pub mod violations;

pub mod proto {
    tonic::include_proto!("passerelle.ingest.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("passerelle_ingest_descriptor");

    /// `Debug` for a message with personal fields: the fields given (non-empty), never their
    /// values; the codes listed in `shown` are printed as they are.
    macro_rules! redacted_debug {
        ($message:ident { $($field:ident),* } shown { $($code:ident),* }) => {
            impl std::fmt::Debug for $message {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let mut given: Vec<&str> = Vec::new();
                    $(if !self.$field.is_empty() { given.push(stringify!($field)); })*
                    f.debug_struct(stringify!($message))
                        $(.field(stringify!($code), &self.$code))*
                        .field("given", &given)
                        .finish()
                }
            }
        };
    }
    redacted_debug!(Person { nir, france_travail_id, departement_id, departement_id_code, idassedic, nom, prenoms, date_naissance } shown {});
    redacted_debug!(Household { matricule } shown { organisme, role });
    redacted_debug!(Address { lines, code_postal } shown { commune });
    redacted_debug!(Mutation { matricule_cedant } shown { organisme_cedant, organisme_prenant });
    redacted_debug!(FtReferentAssigned { nom, email } shown { code_safir });
    redacted_debug!(Agent { email } shown { uid, siret });
    redacted_debug!(OrientationDenied { reason } shown {});
    // The parcours: labels, situations (their theme too: SANTE is health data) and motifs.
    redacted_debug!(Situation { theme, label, noted_on, noted_by } shown {});
    redacted_debug!(DiagnosticRecorded { dernier_emploi, experience, rome_code, niveau_qualification, situations } shown {});
    redacted_debug!(Objective { theme, label } shown {});
    redacted_debug!(PlanActionItem { theme, label } shown { action_id, status });
    redacted_debug!(EngagementPlanSet { hours_motif, objectives, actions } shown { signed_on, revised_on, weekly_hours });
    redacted_debug!(SanctionDecided { motif } shown { sanction_id, share_percent, duration_months, date_debut });
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    EventLog(#[from] passerelle_eventlog::Error),
    #[error("internal: {0}")]
    Internal(&'static str),
}

#[cfg(test)]
mod redaction_tests {
    use super::proto::{Address, AllocataireEvent, Household, Person};

    /// A whole event printed with `{:?}` shows no NIR, name, birth date, matricule or address.
    #[test]
    fn the_debug_of_a_pushed_event_names_personal_fields_without_their_values() {
        let event = AllocataireEvent {
            event_id: "e-1".into(),
            person: Some(Person {
                nir: "1850752121003".into(),
                nom: "LEGRAND".into(),
                prenoms: "Paul".into(),
                date_naissance: "1985-07-12".into(),
                ..Person::default()
            }),
            household: Some(Household { organisme: "521".into(), matricule: "1234567".into(), role: "DEM".into() }),
            ..AllocataireEvent::default()
        };
        let address =
            Address { lines: vec!["12 rue des Lilas".into()], code_postal: "52000".into(), commune: "52121".into() };
        let printed = format!("{event:?} {address:?}");
        for secret in ["1850752121003", "LEGRAND", "Paul", "1985-07-12", "1234567", "Lilas", "52000"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("nir") && printed.contains("521") && printed.contains("52121"), "{printed}");
    }
}

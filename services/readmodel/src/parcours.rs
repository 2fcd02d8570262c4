//! The parcours of a person (diagnostic, engagement plan, rendez-vous, sanctions), folded at read
//! time from their parcours facts: the personal part of each fact (labels, situations, motifs) is
//! sealed with the subject's data key, which only the reader opens, after the policy decided.
//! A person's parcours is a few dozen facts: folding them per read costs less than keeping a
//! second, decrypted copy in the read model, and an erasure (the key destroyed) leaves nothing
//! to clean up.

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::{
    event::Payload,
    parcours::{ActionStatus, NiveauQualification, ParcoursDetail, RendezVousObjet, SituationNoted, Theme},
};
use uuid::Uuid;

/// One parcours fact as stored: still in force (neither superseded nor retracted).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParcoursRow {
    pub source: String,
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// For a département's fact, its authority; none for France Travail's and structures'.
    pub territory: Option<String>,
    pub fact: String,
    pub sealed_key_id: Option<Uuid>,
    pub sealed_nonce: Option<Vec<u8>>,
    pub sealed_data: Option<Vec<u8>>,
}

/// A person's parcours facts in force, in the order they happened.
pub async fn rows<'e, E>(executor: E, person_id: Uuid) -> Result<Vec<ParcoursRow>, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query_as(
        "SELECT source, event_id, occurred_at, recorded_at, territory, fact::text AS fact,
                sealed_key_id, sealed_nonce, sealed_data
         FROM person_events
         WHERE person_id = $1 AND family = 'parcours' AND event_type <> 'retraction'
           AND superseded_by IS NULL AND retracted_by IS NULL
         ORDER BY occurred_at, recorded_at, event_id COLLATE \"C\"",
    )
    .bind(person_id)
    .fetch_all(executor)
    .await
}

/// The person's RSA authority over time, from their CAF/MSA facts in force that place them
/// (those waiting "à affecter" place nobody): (since, authority), in the order they happened.
pub async fn authorities<'e, E>(executor: E, person_id: Uuid) -> Result<Vec<(DateTime<Utc>, String)>, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query_as(
        "SELECT occurred_at, territory FROM person_events
         WHERE person_id = $1 AND family = 'allocataire' AND event_type <> 'retraction'
           AND superseded_by IS NULL AND retracted_by IS NULL
           AND territory IS NOT NULL AND territory <> $2
         ORDER BY occurred_at, recorded_at, event_id COLLATE \"C\"",
    )
    .bind(person_id)
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .fetch_all(executor)
    .await
}

/// Whether a parcours fact counts, as the dossier's fold decides for the département's
/// orientation facts: a département's (it carries its authority) only if that authority was the
/// person's when the fact happened ([`passerelle_domain::territory::authority_at`]). France
/// Travail's and the structures' facts carry none: ingestion checked that they accompany the
/// person.
pub fn counts(item: &Item, authorities: &[(DateTime<Utc>, String)]) -> bool {
    let Some(pushed_by) = &item.territory else { return true };
    passerelle_domain::territory::authority_at(authorities, item.occurred_at) == Some(pushed_by.as_str())
}

/// A parcours fact ready to fold: its payload and, when the reader could open it, its sealed part.
#[derive(Debug, Clone)]
pub struct Item {
    pub source: String,
    pub occurred_at: DateTime<Utc>,
    pub territory: Option<String>,
    pub payload: Payload,
    pub detail: Option<ParcoursDetail>,
}

impl ParcoursRow {
    /// The payload of the stored fact (None for a fact this version cannot read).
    pub fn payload(&self) -> Option<Payload> {
        serde_json::from_str(&self.fact).ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parcours {
    pub diagnostic: Option<Diagnostic>,
    pub plan: Option<Plan>,
    /// Activity hours declared, by month (the latest declaration of a month holds).
    pub hours: Vec<(NaiveDate, u16)>,
    pub rendez_vous: Vec<RendezVous>,
    pub sanctions: Vec<Sanction>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub recorded_at: DateTime<Utc>,
    pub source: String,
    pub rome_code: Option<String>,
    pub niveau_qualification: Option<NiveauQualification>,
    pub dernier_emploi: Option<String>,
    pub experience: Option<String>,
    pub situations: Vec<SituationNoted>,
    /// The sealed part could not be opened (the key destroyed): the situations are unknown.
    pub sealed_unreadable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub set_at: DateTime<Utc>,
    pub source: String,
    pub signed_on: Option<NaiveDate>,
    pub revised_on: Option<NaiveDate>,
    pub weekly_hours: u8,
    pub hours_motif: Option<passerelle_domain::parcours::HoursMotif>,
    pub objectives: Vec<(Theme, String)>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub action_id: String,
    pub theme: Option<Theme>,
    pub label: Option<String>,
    pub status: ActionStatus,
    pub status_since: DateTime<Utc>,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
    pub prescriber_siret: Option<String>,
}

/// Where a rendez-vous stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RendezVousStatus {
    Convoque,
    Honore,
    ManqueExcuse,
    ManqueNonExcuse,
}

impl RendezVousStatus {
    pub fn code(self) -> &'static str {
        match self {
            RendezVousStatus::Convoque => "convoque",
            RendezVousStatus::Honore => "honore",
            RendezVousStatus::ManqueExcuse => "manque_excuse",
            RendezVousStatus::ManqueNonExcuse => "manque_non_excuse",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RendezVous {
    pub rdv_id: String,
    pub at: Option<DateTime<Utc>>,
    pub structure_siret: Option<String>,
    pub objet: Option<RendezVousObjet>,
    pub status: RendezVousStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sanction {
    pub sanction_id: String,
    pub share_percent: u8,
    pub duration_months: u8,
    pub start: NaiveDate,
    pub motif: Option<String>,
    /// Lifted: when, and whether the suspended amounts are paid back.
    pub lifted: Option<(NaiveDate, bool)>,
}

impl Sanction {
    /// In force on `day`: started, not lifted, within its months.
    pub fn in_force(&self, day: NaiveDate) -> bool {
        let end = self.start.checked_add_months(chrono::Months::new(u32::from(self.duration_months)));
        self.lifted.is_none_or(|(lifted, _)| day < lifted) && self.start <= day && end.is_none_or(|end| day < end)
    }
}

/// Folds parcours facts (in the order they happened) into the parcours: a diagnostic or a plan
/// replaces the previous one whole; a status change applies to the action of the plan in force;
/// a rendez-vous and a sanction are followed by their ids.
pub fn fold(items: &[Item]) -> Parcours {
    let mut parcours = Parcours::default();
    for item in items {
        let detail = item.detail.clone().unwrap_or_default();
        match &item.payload {
            Payload::DiagnosticRecorded { rome_code, niveau_qualification } => {
                parcours.diagnostic = Some(Diagnostic {
                    recorded_at: item.occurred_at,
                    source: item.source.clone(),
                    rome_code: rome_code.clone(),
                    niveau_qualification: *niveau_qualification,
                    dernier_emploi: detail.dernier_emploi,
                    experience: detail.experience,
                    situations: detail.situations,
                    sealed_unreadable: item.detail.is_none(),
                });
            }
            Payload::EngagementPlanSet { signed_on, revised_on, weekly_hours, actions } => {
                let actions = actions
                    .iter()
                    .map(|action| {
                        let sealed = detail.actions.iter().find(|d| d.action_id == action.action_id);
                        Action {
                            action_id: action.action_id.clone(),
                            theme: sealed.map(|d| d.theme),
                            label: sealed.map(|d| d.label.clone()),
                            status: action.status,
                            status_since: item.occurred_at,
                            start: action.start,
                            end: action.end,
                            prescriber_siret: action.prescriber_siret.clone(),
                        }
                    })
                    .collect();
                parcours.plan = Some(Plan {
                    set_at: item.occurred_at,
                    source: item.source.clone(),
                    signed_on: *signed_on,
                    revised_on: *revised_on,
                    weekly_hours: *weekly_hours,
                    hours_motif: detail.hours_motif,
                    objectives: detail.objectives.into_iter().map(|o| (o.theme, o.label)).collect(),
                    actions,
                });
            }
            Payload::ActionStatusChanged { action_id, status } => {
                if let Some(action) = parcours
                    .plan
                    .as_mut()
                    .and_then(|plan| plan.actions.iter_mut().find(|action| &action.action_id == action_id))
                {
                    action.status = *status;
                    action.status_since = item.occurred_at;
                }
            }
            Payload::ActivityHoursDeclared { month, hours } => {
                match parcours.hours.iter_mut().find(|(declared, _)| declared == month) {
                    Some(entry) => entry.1 = *hours,
                    None => parcours.hours.push((*month, *hours)),
                }
                parcours.hours.sort_by_key(|(month, _)| *month);
            }
            Payload::RendezVousConvoked { rdv_id, at, structure_siret, objet } => {
                let convoked = RendezVous {
                    rdv_id: rdv_id.clone(),
                    at: Some(*at),
                    structure_siret: Some(structure_siret.clone()),
                    objet: Some(*objet),
                    status: RendezVousStatus::Convoque,
                };
                match parcours.rendez_vous.iter_mut().find(|rdv| &rdv.rdv_id == rdv_id) {
                    // Convoked again (moved): the new date, the outcome starts over.
                    Some(rdv) => *rdv = convoked,
                    None => parcours.rendez_vous.push(convoked),
                }
            }
            Payload::RendezVousHonoured { rdv_id } => {
                rendez_vous(&mut parcours, rdv_id).status = RendezVousStatus::Honore;
            }
            Payload::RendezVousMissed { rdv_id, excused } => {
                rendez_vous(&mut parcours, rdv_id).status =
                    if *excused { RendezVousStatus::ManqueExcuse } else { RendezVousStatus::ManqueNonExcuse };
            }
            Payload::SanctionDecided { sanction_id, share_percent, duration_months, start } => {
                let decided = Sanction {
                    sanction_id: sanction_id.clone(),
                    share_percent: *share_percent,
                    duration_months: *duration_months,
                    start: *start,
                    motif: detail.motif,
                    lifted: None,
                };
                match parcours.sanctions.iter_mut().find(|s| &s.sanction_id == sanction_id) {
                    Some(sanction) => *sanction = decided,
                    None => parcours.sanctions.push(decided),
                }
            }
            Payload::SanctionLifted { sanction_id, lifted_on, back_payment } => {
                if let Some(sanction) = parcours.sanctions.iter_mut().find(|s| &s.sanction_id == sanction_id) {
                    sanction.lifted = Some((*lifted_on, *back_payment));
                }
            }
            _ => {}
        }
    }
    parcours
}

/// The rendez-vous with this id: one whose convocation the hub has not received (pushed by
/// another system, or not yet arrived) is followed from its outcome.
fn rendez_vous<'a>(parcours: &'a mut Parcours, rdv_id: &str) -> &'a mut RendezVous {
    let index = match parcours.rendez_vous.iter().position(|rdv| rdv.rdv_id == rdv_id) {
        Some(index) => index,
        None => {
            parcours.rendez_vous.push(RendezVous {
                rdv_id: rdv_id.to_owned(),
                at: None,
                structure_siret: None,
                objet: None,
                status: RendezVousStatus::Convoque,
            });
            parcours.rendez_vous.len() - 1
        }
    };
    &mut parcours.rendez_vous[index]
}

#[cfg(test)]
mod tests {
    use passerelle_domain::parcours::{ActionDetail, PlanAction};

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-10-{day:02}T10:00:00Z")).expect("instant").with_timezone(&Utc)
    }

    fn item(day: u32, payload: Payload, detail: Option<ParcoursDetail>) -> Item {
        Item { source: "cd-52".into(), occurred_at: at(day), territory: Some("52".into()), payload, detail }
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().expect("date")
    }

    #[test]
    fn a_plan_is_replaced_whole_and_its_actions_follow_their_status_changes() {
        let plan = |actions: Vec<&str>| Payload::EngagementPlanSet {
            signed_on: Some(date("2026-10-01")),
            revised_on: None,
            weekly_hours: 15,
            actions: actions
                .into_iter()
                .map(|id| PlanAction {
                    action_id: id.into(),
                    status: ActionStatus::Prevue,
                    start: None,
                    end: None,
                    prescriber_siret: None,
                })
                .collect(),
        };
        let detail = ParcoursDetail {
            actions: vec![ActionDetail { action_id: "a-1".into(), theme: Theme::Mobilite, label: "Permis B".into() }],
            ..ParcoursDetail::default()
        };
        let items = vec![
            item(1, plan(vec!["a-1", "a-2"]), Some(detail.clone())),
            item(2, Payload::ActionStatusChanged { action_id: "a-1".into(), status: ActionStatus::EnCours }, None),
            item(3, Payload::ActionStatusChanged { action_id: "zz".into(), status: ActionStatus::Realisee }, None),
        ];
        let folded = fold(&items);
        let plan_now = folded.plan.expect("a plan");
        assert_eq!(plan_now.actions.len(), 2);
        assert_eq!(plan_now.actions[0].status, ActionStatus::EnCours);
        assert_eq!(plan_now.actions[0].label.as_deref(), Some("Permis B"));
        assert_eq!(plan_now.actions[1].label, None, "no sealed label for a-2");
        // A revision replaces the plan: a-2 is gone, a-1 starts over from the revision's status.
        let mut revised = items.clone();
        revised.push(item(4, plan(vec!["a-1"]), Some(detail)));
        let plan_now = fold(&revised).plan.expect("a plan");
        assert_eq!(plan_now.actions.len(), 1);
        assert_eq!(plan_now.actions[0].status, ActionStatus::Prevue);
    }

    #[test]
    fn a_departements_fact_counts_only_from_the_persons_authority_when_it_happened() {
        let fact = |day: u32, territory: Option<&str>| Item {
            territory: territory.map(str::to_owned),
            ..item(day, Payload::RendezVousHonoured { rdv_id: "r".into() }, None)
        };
        let moved = vec![(at(3), "52".to_owned()), (at(10), "51".to_owned())];
        assert!(counts(&fact(1, Some("52")), &moved), "before the first CAF fact: the authority it names");
        assert!(counts(&fact(5, Some("52")), &moved));
        assert!(!counts(&fact(12, Some("52")), &moved), "after the move, the former authority's fact counts not");
        assert!(counts(&fact(12, Some("51")), &moved));
        assert!(!counts(&fact(5, Some("52")), &[]), "no CAF/MSA dossier places the person: nobody's authority");
        assert!(counts(&fact(5, None), &[]), "a structure's or France Travail's: checked at ingestion");
    }

    #[test]
    fn rendez_vous_and_sanctions_are_followed_by_their_ids() {
        let items = vec![
            item(
                1,
                Payload::RendezVousConvoked {
                    rdv_id: "r-1".into(),
                    at: at(5),
                    structure_siret: "73282932000074".into(),
                    objet: RendezVousObjet::Accompagnement,
                },
                None,
            ),
            item(5, Payload::RendezVousMissed { rdv_id: "r-1".into(), excused: false }, None),
            item(6, Payload::RendezVousHonoured { rdv_id: "r-2".into() }, None),
            item(
                7,
                Payload::SanctionDecided {
                    sanction_id: "s-1".into(),
                    share_percent: 50,
                    duration_months: 2,
                    start: date("2026-10-07"),
                },
                Some(ParcoursDetail { motif: Some("absences".into()), ..ParcoursDetail::default() }),
            ),
            item(9, Payload::ActivityHoursDeclared { month: date("2026-09-01"), hours: 40 }, None),
            item(9, Payload::ActivityHoursDeclared { month: date("2026-09-01"), hours: 60 }, None),
        ];
        let folded = fold(&items);
        assert_eq!(folded.rendez_vous.len(), 2);
        assert_eq!(folded.rendez_vous[0].status, RendezVousStatus::ManqueNonExcuse);
        assert_eq!(folded.rendez_vous[1].status, RendezVousStatus::Honore);
        assert_eq!(folded.hours, vec![(date("2026-09-01"), 60)]);
        let sanction = &folded.sanctions[0];
        assert!(sanction.in_force(date("2026-11-01")));
        assert!(!sanction.in_force(date("2026-12-07")), "two months from 7 October");
        let mut lifted = items;
        lifted.push(item(
            20,
            Payload::SanctionLifted { sanction_id: "s-1".into(), lifted_on: date("2026-10-20"), back_payment: true },
            None,
        ));
        let sanction = &fold(&lifted).sanctions[0];
        assert_eq!(sanction.lifted, Some((date("2026-10-20"), true)));
        assert!(!sanction.in_force(date("2026-10-21")));
        assert_eq!(sanction.motif.as_deref(), Some("absences"));
    }
}

//! The API's operations, independent of the transport: authenticate, decide with the policy,
//! read the read models, journal. REST (`rest.rs`) is a thin face over these.

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::parcours::{HoursMotif, ParcoursDetail};
use passerelle_domain::{
    DepartementCode, DepartementInternalId, FranceTravailId, Matricule, Nir, Organisme,
    event::{PersonalData, SubjectKey},
};
use passerelle_eventlog::{
    shredding::{KeyStore, Sealed, associated_data},
    subject::SubjectKeys,
};
use passerelle_readmodel::{Dossier, TimelineEntry, parcours, territory};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

mod page;
mod person;
pub use page::PageQuery;
use page::{JournalPosition, Position as _, TimelinePosition};

pub use person::{Identification, OwnData, Pivot};

use crate::{
    auth::{Claims, Rejected, Verifier},
    habilitations::{Agent, Habilitations},
    journal::{self, Channel, Entry},
    policy::{self, Access, Decision, Motif, OrganisationKind, Purpose, Relation, Role, Section, Situation},
};

/// Why a request gets no data. The transport maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Unauthenticated(Rejected),
    #[error("the agent {0:?} is not in the habilitations file, or not for the organisation (siret) of the token")]
    NotHabilitated(String),
    #[error("{parameter}: {reason}")]
    BadRequest { parameter: &'static str, reason: String },
    /// Out of reach or non-existent: the same answer for both.
    #[error("no person reachable with this identifier")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many requests ({}): retry in {} s", .0.limit.code(), .0.retry_after_seconds())]
    RateLimited(crate::limits::Exceeded),
    /// The database is unreachable or restarting: nothing was read or journaled; retry.
    #[error("the hub's database is unavailable; retry in a few seconds")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// Seconds a client is told to wait before retrying an unavailable hub (`Retry-After`).
pub const RETRY_UNAVAILABLE_SECONDS: u32 = 2;

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        if passerelle_readmodel::database_unavailable(&error) {
            Failure::Unavailable(error.to_string())
        } else {
            Failure::Internal(error.to_string())
        }
    }
}

impl Failure {
    fn outcome(&self) -> String {
        match self {
            Failure::Unauthenticated(_) => "unauthenticated".into(),
            Failure::NotHabilitated(_) => "not_habilitated".into(),
            Failure::BadRequest { .. } => "invalid".into(),
            Failure::NotFound => "not_found".into(),
            Failure::Forbidden(motif) => format!("refused:{motif}"),
            Failure::RateLimited(_) => "rate_limited".into(),
            Failure::Unavailable(_) => "unavailable".into(),
            Failure::Internal(_) => "error".into(),
        }
    }
}

/// An authenticated, habilitated agent.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: Agent,
    pub claims: Claims,
    /// The door the request came through, written in the journal.
    pub channel: Channel,
}

/// An agent signed in to the web console: the claims of an id_token the console verified
/// (signature, issuer, audience, nonce). What they may do still comes from the habilitations.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SignedInAgent {
    pub issuer: String,
    pub subject: String,
    pub uid: String,
    pub siret: String,
    pub email: String,
    pub idp_id: Option<String>,
}

pub struct Api {
    pool: PgPool,
    habilitations: Habilitations,
    verifier: Verifier,
    keys: SubjectKeys,
    store: KeyStore,
    limiters: crate::limits::Limiters,
    /// The journal's group commit, started with the first read (on the serving runtime).
    journal: std::sync::OnceLock<journal::Grouped>,
}

/// The search criteria of `POST /personnes/recherche`. A field is a string or absent (null is
/// refused, as the OpenAPI document says). `Debug` names the criteria given, never their values.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[serde(default, deserialize_with = "string_if_present")]
    pub motif: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub nir: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub nom: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub date_naissance: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub matricule_caf: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub organisme: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub id_france_travail: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub id_departement: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    pub departement: Option<String>,
}

impl std::fmt::Debug for SearchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = [
            ("nir", self.nir.is_some()),
            ("nom", self.nom.is_some()),
            ("date_naissance", self.date_naissance.is_some()),
            ("matricule_caf", self.matricule_caf.is_some()),
            ("organisme", self.organisme.is_some()),
            ("id_france_travail", self.id_france_travail.is_some()),
            ("id_departement", self.id_departement.is_some()),
            ("departement", self.departement.is_some()),
        ];
        let given: Vec<&str> = given.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect();
        f.debug_struct("SearchRequest").field("motif", &self.motif).field("criteria", &given).finish()
    }
}

fn string_if_present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    <String as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// A page of a territory's work queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueQuery<'a> {
    pub code: &'a str,
    pub file: &'a str,
    pub page: Option<&'a str>,
    pub size: Option<&'a str>,
    pub purpose: Option<&'a str>,
}

/// A work queue as the console asks for it: filters, order and page (or everything, for an
/// export).
#[derive(Debug, Clone)]
pub struct QueueRequest<'a> {
    pub code: &'a str,
    pub queue: territory::Queue,
    pub purpose: Option<&'a str>,
    pub filter: territory::QueueFilter,
    pub page: i64,
    pub size: i64,
}

/// One person of a work queue, as the orientation staff of the territory sees them.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub person_id: Uuid,
    pub since: Option<DateTime<Utc>>,
    pub commune: Option<String>,
    pub nom: Option<String>,
    pub prenoms: Option<String>,
}

#[derive(Debug, Clone)]
pub struct QueuePage {
    pub rows: Vec<QueueRow>,
    pub total: i64,
}

/// Journal rows one search returns, at most (narrow the search for more).
pub const JOURNAL_MAX_ROWS: i64 = 1000;
/// Journal rows per page by default (`limite`); at most [`JOURNAL_MAX_ROWS`].
const JOURNAL_PAGE: usize = 100;
/// Timeline items per page by default (`limite`), and at most.
const TIMELINE_PAGE: usize = 100;
const TIMELINE_MAX_PAGE: usize = 500;

/// Rows of an export, at most (a larger queue is narrowed with the filters first).
pub const EXPORT_MAX_ROWS: i64 = 5000;

/// A territory's dashboard: its indicators, the orientation delay by month, the queues' sizes.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub indicators: territory::Indicators,
    pub delay_by_month: Vec<(String, i64, f64, f64)>,
    pub queue_sizes: Vec<(territory::Queue, i64)>,
}

/// The journal query of the DPO.
#[derive(Debug, Clone, Default)]
pub struct JournalQuery {
    pub person_id: Option<String>,
    pub agent: Option<String>,
    pub depuis: Option<String>,
    pub jusqu_a: Option<String>,
    /// The purpose stated (orientation, accompagnement, instruction_rsa).
    pub motif: Option<String>,
    /// The outcome (shown, found, none, not_found, refused…).
    pub resultat: Option<String>,
    /// `limite` (100 by default, at most 1,000) and `curseur`.
    pub page: PageQuery,
}

/// Whether the caller is the person's active référent: the référent fact names an agent of a
/// structure, so both the agent's `uid` and their organisation's SIRET must match it (a `uid`
/// alone is unique only within one identity provider, and any agent could carry a matching one).
fn is_referent(caller: &Caller, dossier: &Dossier) -> bool {
    dossier.referent_uid.as_deref() == Some(caller.agent.uid.as_str())
        && dossier.referent_siret.as_deref() == Some(caller.agent.organisation.siret.as_str())
}

impl Api {
    pub fn new(
        pool: PgPool,
        habilitations: Habilitations,
        verifier: Verifier,
        keys: SubjectKeys,
        store: KeyStore,
    ) -> Self {
        Self {
            pool,
            habilitations,
            verifier,
            keys,
            store,
            limiters: crate::limits::Limiters::new(&Default::default()),
            journal: std::sync::OnceLock::new(),
        }
    }

    /// The same API with these limits (`api.limits`).
    pub fn with_limits(mut self, limits: &crate::limits::LimitsConfig) -> Self {
        self.limiters = crate::limits::Limiters::new(limits);
        self
    }

    /// Forgets idle rate-limit buckets (the hub calls it every minute).
    pub fn forget_idle_limits(&self) {
        self.limiters.forget_idle();
    }

    /// Who calls: a valid token of a habilitated agent. A refusal is journaled.
    pub async fn authenticate(
        &self,
        request_id: Uuid,
        action: &'static str,
        channel: Channel,
        authorization: Option<&str>,
        address: Option<std::net::IpAddr>,
    ) -> Result<Caller, Failure> {
        let result = match self.verifier.verify(authorization) {
            // Calls without a valid token are journaled while under the per-address limit;
            // above it they are only counted (a flood must not become a flood of rows).
            Err(rejected) => match self.limiters.unauthenticated(address) {
                Ok(()) => Err(Failure::Unauthenticated(rejected)),
                Err(exceeded) => return Err(Self::rate_limited(exceeded)),
            },
            Ok(claims) => self.habilitated(claims, channel),
        };
        let caller = self.journal_refused_caller(request_id, action, channel, result).await?;
        self.limiters.agent(caller.agent.idp_id.as_deref(), &caller.agent.uid).map_err(Self::rate_limited)?;
        Ok(caller)
    }

    fn rate_limited(exceeded: crate::limits::Exceeded) -> Failure {
        crate::metrics::metrics().rate_limited.with_label_values(&[exceeded.limit.code()]).inc();
        Failure::RateLimited(exceeded)
    }

    /// The caller of a console request: the agent the console signed in (from a verified
    /// id_token), habilitated now (a habilitation withdrawn since sign-in takes effect at once).
    pub async fn console_caller(
        &self,
        request_id: Uuid,
        action: &'static str,
        agent: &SignedInAgent,
    ) -> Result<Caller, Failure> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: agent.issuer.clone(),
            aud: String::new(),
            sub: agent.subject.clone(),
            exp: now,
            iat: now,
            uid: agent.uid.clone(),
            email: agent.email.clone(),
            siret: agent.siret.clone(),
            idp_id: agent.idp_id.clone(),
        };
        let result = self.habilitated(claims, Channel::Console);
        let caller = self.journal_refused_caller(request_id, action, Channel::Console, result).await?;
        self.limiters.agent(caller.agent.idp_id.as_deref(), &caller.agent.uid).map_err(Self::rate_limited)?;
        Ok(caller)
    }

    /// The agent of the habilitations file matching verified claims (identity provider, uid and
    /// the organisation's SIRET).
    fn habilitated(&self, claims: Claims, channel: Channel) -> Result<Caller, Failure> {
        match self.habilitations.agent(claims.idp_id.as_deref(), &claims.uid) {
            Some(agent) if agent.organisation.siret == claims.siret => {
                Ok(Caller { agent: agent.clone(), claims, channel })
            }
            _ => Err(Failure::NotHabilitated(claims.uid.clone())),
        }
    }

    async fn journal_refused_caller(
        &self,
        request_id: Uuid,
        action: &'static str,
        channel: Channel,
        result: Result<Caller, Failure>,
    ) -> Result<Caller, Failure> {
        if let Err(failure) = &result {
            let uid = match failure {
                Failure::NotHabilitated(uid) => Some(uid.clone()),
                _ => None,
            };
            self.journal(Entry {
                request_id,
                channel,
                action,
                agent_uid: uid,
                outcome: failure.outcome(),
                ..Entry::default()
            })
            .await?;
        }
        result
    }

    /// The organisations and agents this hub knows (the development identity provider lists them).
    pub fn habilitations(&self) -> &Habilitations {
        &self.habilitations
    }

    async fn journal(&self, entry: Entry) -> Result<(), Failure> {
        let grouped = self.journal.get_or_init(|| journal::Grouped::start(self.pool.clone()));
        grouped.write(&self.pool, &entry).await.map_err(|e| match Failure::from(e) {
            Failure::Internal(detail) => Failure::Internal(format!("journal: {detail}")),
            other => other,
        })
    }

    fn entry(caller: &Caller, request_id: Uuid, action: &'static str, purpose: Option<Purpose>) -> Entry {
        Entry {
            request_id,
            channel: caller.channel,
            action,
            agent_uid: Some(caller.agent.uid.clone()),
            agent_siret: Some(caller.agent.organisation.siret.clone()),
            agent_role: Some(caller.agent.role.code()),
            purpose: purpose.map(Purpose::code),
            ..Entry::default()
        }
    }

    /// Journals a failure of an authenticated request, then returns it.
    async fn refuse<T>(&self, mut entry: Entry, failure: Failure) -> Result<T, Failure> {
        entry.outcome = failure.outcome();
        self.journal(entry).await?;
        Err(failure)
    }

    fn purpose(raw: Option<&str>, parameter: &'static str) -> Result<Purpose, Failure> {
        let raw = raw.map(str::trim).filter(|raw| !raw.is_empty()).ok_or(Failure::BadRequest {
            parameter,
            reason: "required: the purpose of the read (orientation, accompagnement or instruction_rsa)".into(),
        })?;
        Purpose::parse(raw).ok_or(Failure::BadRequest {
            parameter,
            reason: format!("{raw:?} is not orientation, accompagnement or instruction_rsa"),
        })
    }

    /// How the caller stands to the person.
    async fn situation(&self, caller: &Caller, dossier: &Dossier) -> Result<Situation, Failure> {
        let organisation = &caller.agent.organisation;
        let relation = match organisation.kind {
            OrganisationKind::AutoriteRsa | OrganisationKind::FranceTravail => {
                let territory = organisation.territory.as_deref();
                if dossier.territory.as_deref() == territory && territory.is_some() {
                    Relation::Own
                } else if organisation.kind == OrganisationKind::AutoriteRsa
                    && territory.is_some()
                    && dossier.previous_territory.as_deref() == territory
                {
                    Relation::MovedOut
                } else {
                    Relation::None
                }
            }
            OrganisationKind::Caisse => {
                let organisme = match &dossier.household_key {
                    Some(household_key) => {
                        passerelle_readmodel::latest_organisme(&self.pool, dossier.person_id, household_key).await?
                    }
                    None => None,
                };
                match organisme {
                    Some(organisme) if Some(&organisme) == organisation.organisme.as_ref() => Relation::Own,
                    _ => Relation::None,
                }
            }
            OrganisationKind::Structure => Relation::None,
        };
        Ok(Situation {
            relation,
            referent: is_referent(caller, dossier),
            opposition: dossier.opposition,
            consent_diagnostic: dossier.consent_diagnostic,
        })
    }

    /// The person's dossier now (following a merge) and the caller's situation, or not found.
    async fn reach(&self, caller: &Caller, person_id: Uuid, purpose: Purpose) -> Result<(Dossier, Situation), Failure> {
        let dossier = passerelle_readmodel::current_dossier(&self.pool, person_id).await?;
        // A purpose the role does not serve is refused whoever the person is (existing or not),
        // except for the person's own référent reading for accompaniment.
        let role = caller.agent.role;
        if !policy::purpose_allowed(role, purpose) {
            let referee = purpose == Purpose::Accompagnement
                && role != Role::Dpo
                && dossier.as_ref().is_some_and(|d| is_referent(caller, d));
            if !referee {
                let motif = if role == Role::Dpo { Motif::Role } else { Motif::MotifAcces };
                return Err(Failure::Forbidden(motif.code()));
            }
        }
        let dossier = dossier.ok_or(Failure::NotFound)?;
        let situation = self.situation(caller, &dossier).await?;
        match policy::access(role, purpose, &situation) {
            Access::Granted => Ok((dossier, situation)),
            Access::NotFound => Err(Failure::NotFound),
            Access::Refused(motif) => Err(Failure::Forbidden(motif.code())),
        }
    }

    fn person_id(raw: &str) -> Result<Uuid, Failure> {
        raw.parse()
            .map_err(|_| Failure::BadRequest { parameter: "person_id", reason: format!("{raw:?} is not a UUID") })
    }

    /// The start of a dossier or timeline read: purpose and id checked, the person reached (a
    /// refusal journaled), and the journal entry to complete.
    async fn open(
        &self,
        caller: &Caller,
        request_id: Uuid,
        action: &'static str,
        person_id: &str,
        purpose: Option<&str>,
    ) -> Result<(Entry, Purpose, Dossier, Situation), Failure> {
        let mut entry = Self::entry(caller, request_id, action, None);
        let (purpose, person_id) =
            match Self::purpose(purpose, "X-Motif-Acces").and_then(|p| Ok((p, Self::person_id(person_id)?))) {
                Ok(ok) => ok,
                Err(failure) => return self.refuse(entry, failure).await,
            };
        entry.purpose = Some(purpose.code());
        entry.person_id = Some(person_id);
        let (dossier, situation) = match self.reach(caller, person_id, purpose).await {
            Ok(found) => found,
            Err(failure) => return self.refuse(entry, failure).await,
        };
        entry.person_id = Some(dossier.person_id);
        Ok((entry, purpose, dossier, situation))
    }

    /// `GET /dossiers/{person_id}`.
    pub async fn dossier(
        &self,
        caller: &Caller,
        request_id: Uuid,
        person_id: &str,
        purpose: Option<&str>,
    ) -> Result<Value, Failure> {
        let (mut entry, purpose, dossier, situation) =
            self.open(caller, request_id, "dossier", person_id, purpose).await?;
        let person_id = Self::person_id(person_id)?;
        let mut sections = serde_json::Map::new();
        let mut withheld = Vec::new();
        let decisions: Vec<(Section, Decision)> = Section::ALL
            .into_iter()
            .map(|section| (section, policy::section(caller.agent.role, purpose, &situation, section)))
            .collect();
        // The parcours facts, opened only when a section that shows them is granted.
        let opened = if decisions.iter().any(|(section, decision)| {
            matches!(section, Section::Engagements | Section::Diagnostic) && !matches!(decision, Decision::Withheld(_))
        }) {
            let view = policy::parcours_view(caller.agent.role, purpose, &situation);
            let territory = caller.agent.organisation.territory.as_deref();
            Some((self.parcours(dossier.person_id, view, territory).await?, view))
        } else {
            None
        };
        for (section, decision) in decisions {
            let parcours = opened.as_ref().map(|(folded, view)| (folded, *view));
            match decision {
                Decision::Shown => {
                    sections.insert(section.code().into(), self.section(&dossier, section, false, parcours).await?);
                    entry.sections_shown.push(section.code());
                }
                Decision::Reduced => {
                    sections.insert(section.code().into(), self.section(&dossier, section, true, parcours).await?);
                    entry.sections_shown.push(section.code());
                }
                Decision::Withheld(motif) => {
                    withheld.push(json!({"section": section.code(), "motif": motif.code()}));
                    entry.sections_withheld.push((section.code(), motif.code()));
                }
            }
        }
        let moved_out = situation.relation == Relation::MovedOut && !situation.referent;
        entry.outcome = if moved_out { "moved_out".into() } else { "shown".into() };
        self.journal(entry).await?;
        let mut body = json!({
            "person_id": dossier.person_id,
            "sections": sections,
            "sections_masquees": withheld,
        });
        if dossier.person_id != person_id {
            body["redirige_depuis"] = json!(person_id);
        }
        if moved_out {
            body["demenagement"] = json!({"depuis": dossier.territory_since});
        }
        if dossier.incomplete {
            body["incomplet"] = json!(true);
        }
        // How fresh each shown source is: when the hub last received a fact of its family.
        let mut freshness = serde_json::Map::new();
        for (family, received) in passerelle_readmodel::last_received_by_family(&self.pool, dossier.person_id).await? {
            let section = match family.as_str() {
                "allocataire" => Section::DroitsRsa,
                "demandeur_emploi" => Section::Emploi,
                "parcours" => Section::Engagements,
                _ => Section::Parcours,
            };
            if entry_shows(&body, section) {
                freshness.insert(family, json!(received));
            }
        }
        body["fraicheur"] = Value::Object(freshness);
        Ok(body)
    }

    async fn section(
        &self,
        dossier: &Dossier,
        section: Section,
        reduced: bool,
        parcours: Option<(&parcours::Parcours, policy::ParcoursView)>,
    ) -> Result<Value, Failure> {
        let empty = parcours::Parcours::default();
        Ok(match section {
            Section::Identite => self.identity(dossier.person_id, dossier.territory.as_deref()).await?,
            Section::DroitsRsa if reduced => json!({
                "etat_droit": dossier.right_state,
                "soumis_droits_devoirs": dossier.sdd,
            }),
            Section::DroitsRsa => json!({
                "etat_droit": dossier.right_state,
                "etat_droit_depuis": dossier.right_state_at,
                "motif": dossier.right_motif,
                "soumis_droits_devoirs": dossier.sdd,
                "sdd_depuis": dossier.sdd_since,
                "role_foyer": dossier.role,
            }),
            Section::Emploi => json!({
                "statut": dossier.ft_status,
                "statut_depuis": dossier.ft_status_at,
                "categorie": dossier.ft_categorie,
                "accompagnement": dossier.ft_accompagnement,
            }),
            Section::Parcours => {
                let history = passerelle_readmodel::orientation_history(&self.pool, dossier.person_id).await?;
                json!({
                    "orientation": {
                        "statut": dossier.orientation_status,
                        "type": dossier.orientation_type,
                        "decidee_le": dossier.oriented_at,
                        "structure_siret": dossier.structure_siret,
                    },
                    "historique_orientation": history.into_iter().map(|step| json!({
                        "evenement": step.event_type, "date": step.occurred_at, "type": step.fact.get("orientation_type").cloned().and_then(|t| serde_json::from_value::<passerelle_domain::OrientationType>(t).ok()).map(|t| t.code()),
                    })).collect::<Vec<_>>(),
                    "referent": dossier.referent_uid.as_ref().map(|uid| json!({
                        "uid": uid, "siret": dossier.referent_siret, "depuis": dossier.referent_since,
                    })),
                    "contrat": dossier.contract_kind.as_ref().map(|kind| json!({
                        "type": kind, "debut": dossier.contract_start, "fin": dossier.contract_end,
                    })),
                    "opposition": dossier.opposition,
                })
            }
            Section::Diagnostic => {
                let (folded, view) = parcours.unwrap_or((&empty, policy::ParcoursView::default()));
                let mut body = diagnostic_json(folded, view);
                body["consentement_partage"] = json!(dossier.consent_diagnostic);
                body
            }
            Section::Engagements => {
                let (folded, view) = parcours.unwrap_or((&empty, policy::ParcoursView::default()));
                engagements_json(folded, view)
            }
        })
    }

    /// The person's parcours as `view` lets the reader see it, folded once: their facts in force
    /// that count (a département's from the person's authority at the time; under opposition,
    /// the reader's authority's own, `territory`), their sealed part opened with the subject's
    /// data key only when the view shows some of it (None where it cannot be: a destroyed key).
    async fn parcours(
        &self,
        person_id: Uuid,
        view: policy::ParcoursView,
        territory: Option<&str>,
    ) -> Result<parcours::Parcours, Failure> {
        let rows = parcours::rows(&self.pool, person_id).await?;
        let authorities = parcours::authorities(&self.pool, person_id).await?;
        // The sanctions alone show nothing sealed unless their motif is shown.
        let open = !view.sanctions_only || view.sanction_motif;
        let mut opener = SealedOpener::new(&self.store);
        if open {
            opener.prefetch(rows.iter().filter_map(|row| row.sealed_key_id)).await;
        }
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            if view.own_authority_only && (territory.is_none() || row.territory.as_deref() != territory) {
                continue;
            }
            let Some(payload) = row.payload() else { continue };
            let detail = match (row.sealed_key_id, row.sealed_nonce, row.sealed_data) {
                _ if !open => None,
                (Some(key_id), Some(nonce), Some(ciphertext)) => opener
                    .open("parcours", &row.source, &row.event_id, Sealed { key_id, nonce, ciphertext })
                    .await
                    .map(|data| data.parcours.unwrap_or_default()),
                _ => Some(ParcoursDetail::default()),
            };
            let item = parcours::Item {
                source: row.source,
                occurred_at: row.occurred_at,
                territory: row.territory,
                payload,
                detail,
            };
            if parcours::counts(&item, &authorities) {
                items.push(item);
            }
        }
        Ok(parcours::fold(&items))
    }

    /// The identity section: opened from the sealed personal data of the person's events, the
    /// most recent value of each field. Unreadable data (a destroyed key) is left out.
    async fn identity(&self, person_id: Uuid, territory: Option<&str>) -> Result<Value, Failure> {
        let opened = self.personal(person_id).await?;
        Ok(json!({
            "nom": opened.nom, "prenoms": opened.prenoms, "date_naissance": opened.naissance,
            "nir_masque": opened.nir.as_ref().map(Nir::masked), "commune": opened.commune,
            "territoire": territory,
        }))
    }

    /// A person's personal data, opened from the sealed fields of their events: the most recent
    /// value of each field; unreadable data (a destroyed key) is left out. The parcours facts are
    /// not read for it: they hold labels, not the identity the institutions' facts give, and a
    /// long parcours would push those out of the window.
    async fn personal(&self, person_id: Uuid) -> Result<Opened, Failure> {
        let rows = passerelle_readmodel::identity_fields(&self.pool, person_id, 50).await?;
        let mut opened = Opened::default();
        let mut opener = SealedOpener::new(&self.store);
        opener.prefetch(rows.iter().filter_map(|row| row.sealed_key_id)).await;
        for row in rows {
            if opened.is_complete() {
                break;
            }
            if opened.commune.is_none() {
                opened.commune = row.commune;
            }
            let (Some(key_id), Some(nonce), Some(ciphertext)) = (row.sealed_key_id, row.sealed_nonce, row.sealed_data)
            else {
                continue;
            };
            let sealed = Sealed { key_id, nonce, ciphertext };
            let Some(data) = opener.open(&row.family, &row.source, &row.event_id, sealed).await else { continue };
            opened.nom = opened.nom.or(data.nom);
            opened.prenoms = opened.prenoms.or(data.prenoms);
            opened.naissance = opened.naissance.or(data.date_naissance.map(|d| d.to_string()));
            opened.nir = opened.nir.or_else(|| data.nir.as_deref().and_then(|n| Nir::parse(n).ok()));
        }
        Ok(opened)
    }

    /// `GET /dossiers/{person_id}/historique`: the timeline, each entry only if its section is
    /// shown, a page at a time (`limite` items, 100 by default, at most 500; `suivant` asks for
    /// the next page).
    pub async fn timeline(
        &self,
        caller: &Caller,
        request_id: Uuid,
        person_id: &str,
        purpose: Option<&str>,
        page: &PageQuery,
    ) -> Result<Value, Failure> {
        let page = match page.checked::<TimelinePosition>(TIMELINE_PAGE, TIMELINE_MAX_PAGE) {
            Ok(page) => page,
            Err(failure) => return self.refuse(Self::entry(caller, request_id, "historique", None), failure).await,
        };
        self.timeline_page(caller, request_id, person_id, purpose, page.limit, page.after).await
    }

    /// The whole visible timeline at once, for the console, which shows it 20 rows a page with
    /// its own filters. Same policy, same journal row as [`Api::timeline`].
    pub async fn timeline_whole(
        &self,
        caller: &Caller,
        request_id: Uuid,
        person_id: &str,
        purpose: Option<&str>,
    ) -> Result<Value, Failure> {
        self.timeline_page(caller, request_id, person_id, purpose, usize::MAX, None).await
    }

    async fn timeline_page(
        &self,
        caller: &Caller,
        request_id: Uuid,
        person_id: &str,
        purpose: Option<&str>,
        limit: usize,
        after: Option<TimelinePosition>,
    ) -> Result<Value, Failure> {
        let (mut entry, purpose, dossier, situation) =
            self.open(caller, request_id, "historique", person_id, purpose).await?;
        let timeline = passerelle_readmodel::timeline(&self.pool, dossier.person_id).await?;
        let mut shown = Vec::new();
        for section in Section::ALL {
            match policy::section(caller.agent.role, purpose, &situation, section) {
                Decision::Withheld(motif) => entry.sections_withheld.push((section.code(), motif.code())),
                decision => {
                    entry.sections_shown.push(section.code());
                    shown.push((section, decision));
                }
            }
        }
        let view = policy::parcours_view(caller.agent.role, purpose, &situation);
        let visible = |item: &TimelineEntry| {
            let section = section_of(item);
            shown.iter().any(|(s, decision)| {
                *s == section
                    && match (section, decision) {
                        (_, Decision::Shown) => true,
                        (Section::DroitsRsa, _) => {
                            item.event_type.starts_with("rsa.right_") || item.event_type == "rsa.sdd_changed"
                        }
                        // The timeline names events, not their content: a reduced diagnostic
                        // (without sensitive items) shows its events.
                        (Section::Diagnostic, _) => true,
                        (Section::Engagements, _) => {
                            view.sanctions_only && item.event_type.starts_with("parcours.sanction_")
                        }
                        _ => false,
                    }
            })
        };
        let mut ordered: Vec<(TimelinePosition, &TimelineEntry)> = timeline
            .iter()
            .filter(|item| visible(item))
            .map(|item| (TimelinePosition::of(item), item))
            .filter(|(position, _)| after.as_ref().is_none_or(|after| position > after))
            .collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        let next = (ordered.len() > limit).then(|| ordered[limit - 1].0.encode());
        let items: Vec<Value> = ordered
            .into_iter()
            .take(limit)
            .map(|(_, item)| {
                json!({
                    "source": item.source, "event_id": item.event_id, "section": section_of(item).code(),
                    "evenement": item.event_type, "date": item.occurred_at, "recu_le": item.recorded_at,
                    "relaye_par": item.relayed_by, "corrige_par": item.superseded_by, "retire_par": item.retracted_by,
                })
            })
            .collect();
        entry.outcome = "shown".into();
        self.journal(entry).await?;
        Ok(json!({"person_id": dossier.person_id, "evenements": items, "suivant": next}))
    }

    /// `POST /personnes/recherche`: the persons matching one criterion that the caller may reach.
    pub async fn search(&self, caller: &Caller, request_id: Uuid, request: &SearchRequest) -> Result<Value, Failure> {
        let mut entry = Self::entry(caller, request_id, "recherche", None);
        let purpose = match Self::purpose(request.motif.as_deref(), "motif") {
            Ok(purpose) => purpose,
            Err(failure) => return self.refuse(entry, failure).await,
        };
        entry.purpose = Some(purpose.code());
        let role = caller.agent.role;
        if !policy::purpose_allowed(role, purpose) && (purpose != Purpose::Accompagnement || role == Role::Dpo) {
            let motif = if role == Role::Dpo { Motif::Role } else { Motif::MotifAcces };
            return self.refuse(entry, Failure::Forbidden(motif.code())).await;
        }
        let candidates = match self.candidates(caller, request).await {
            Ok(candidates) => candidates,
            Err(failure) => return self.refuse(entry, failure).await,
        };
        let mut found = Vec::new();
        for person_id in candidates {
            let Some(dossier) = passerelle_readmodel::dossier(&self.pool, person_id).await? else { continue };
            let situation = self.situation(caller, &dossier).await?;
            if policy::access(caller.agent.role, purpose, &situation) == Access::Granted {
                found.push((dossier.person_id, situation.relation == Relation::MovedOut && !situation.referent));
            }
        }
        found.sort();
        found.dedup();
        entry.persons_found = found.iter().map(|(id, _)| *id).collect();
        entry.outcome = if found.is_empty() { "none".into() } else { "found".into() };
        self.journal(entry).await?;
        Ok(json!({
            "resultats": found.iter().map(|(id, moved)| json!({"person_id": id, "demenage": moved})).collect::<Vec<_>>(),
        }))
    }

    async fn candidates(&self, caller: &Caller, request: &SearchRequest) -> Result<Vec<Uuid>, Failure> {
        // A field given must hold something: a blank one is a mistake, not an absent criterion.
        for (parameter, value) in [
            ("nir", &request.nir),
            ("nom", &request.nom),
            ("date_naissance", &request.date_naissance),
            ("matricule_caf", &request.matricule_caf),
            ("organisme", &request.organisme),
            ("id_france_travail", &request.id_france_travail),
            ("id_departement", &request.id_departement),
            ("departement", &request.departement),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(Failure::BadRequest { parameter, reason: "empty; leave the field out instead".into() });
            }
        }
        let given =
            |value: &Option<String>| value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let criteria = [
            given(&request.nir).is_some(),
            given(&request.nom).is_some() || given(&request.date_naissance).is_some(),
            given(&request.matricule_caf).is_some() || given(&request.organisme).is_some(),
            given(&request.id_france_travail).is_some(),
            given(&request.id_departement).is_some(),
        ];
        let count = criteria.iter().filter(|c| **c).count();
        if count != 1 {
            return Err(Failure::BadRequest {
                parameter: "criteres",
                reason: "exactly one of: nir; nom + date_naissance; matricule_caf + organisme; id_france_travail; id_departement".into(),
            });
        }
        let bad = |parameter: &'static str, reason: String| Failure::BadRequest { parameter, reason };
        let by_key = |key: SubjectKey| async move {
            Ok::<_, Failure>(
                passerelle_readmodel::person_of_subject(&self.pool, key.as_str()).await?.into_iter().collect(),
            )
        };
        if let Some(nir) = given(&request.nir) {
            let nir = Nir::parse(&nir).map_err(|e| bad("nir", e.message))?;
            return by_key(self.keys.nir(&nir)).await;
        }
        if let Some(id) = given(&request.id_france_travail) {
            let id = FranceTravailId::parse(&id).map_err(|e| bad("id_france_travail", e.message))?;
            return by_key(self.keys.france_travail(&id)).await;
        }
        if let Some(id) = given(&request.id_departement) {
            let id = DepartementInternalId::parse(&id).map_err(|e| bad("id_departement", e.message))?;
            // The département named; else the caller's authority's départements (a collectivité
            // can span two, the Métropole de Lyon keys its ids under 69); else, for an
            // organisation without a territory (a caisse, a structure), every département: the
            // policy then keeps only the persons the caller may reach.
            let departements: Vec<DepartementCode> = match given(&request.departement) {
                Some(code) => vec![DepartementCode::parse(&code).map_err(|e| bad("departement", e.message))?],
                None => {
                    let territory = caller.agent.organisation.territory.as_deref();
                    let own: Vec<DepartementCode> = DepartementCode::all()
                        .filter(|departement| {
                            territory.is_some_and(|authority| {
                                authority.starts_with(departement.as_str())
                                    || passerelle_domain::territory::Authority::of_departement(departement)
                                        .is_some_and(|of| of.as_str() == authority)
                            })
                        })
                        .collect();
                    if own.is_empty() { DepartementCode::all().collect() } else { own }
                }
            };
            let keys: Vec<String> = departements
                .iter()
                .map(|departement| self.keys.departement(departement, &id).as_str().to_owned())
                .collect();
            return Ok(passerelle_readmodel::persons_of_subjects(&self.pool, &keys).await?);
        }
        if given(&request.matricule_caf).is_some() || given(&request.organisme).is_some() {
            let matricule =
                given(&request.matricule_caf).ok_or_else(|| bad("matricule_caf", "required with organisme".into()))?;
            let organisme =
                given(&request.organisme).ok_or_else(|| bad("organisme", "required with matricule_caf".into()))?;
            let matricule = Matricule::parse(&matricule).map_err(|e| bad("matricule_caf", e.message))?;
            let organisme = Organisme::parse(&organisme).map_err(|e| bad("organisme", e.message))?;
            let household = self.keys.household(&organisme, &matricule);
            return Ok(passerelle_readmodel::persons_of_household(&self.pool, household.as_str()).await?);
        }
        let nom = given(&request.nom).ok_or_else(|| bad("nom", "required with date_naissance".into()))?;
        let letter = |c: char| c.is_ascii_alphabetic() || matches!(c, 'À'..='Ö' | 'Ø'..='ö' | 'ø'..='ÿ');
        if nom.chars().count() > 100
            || !nom.chars().any(letter)
            || !nom.chars().all(|c| letter(c) || matches!(c, ' ' | '-' | '\'' | '’'))
        {
            return Err(bad("nom", "a name: letters, spaces, hyphens and apostrophes, at most 100".into()));
        }
        let date = given(&request.date_naissance).ok_or_else(|| bad("date_naissance", "required with nom".into()))?;
        let date = NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| {
            bad("date_naissance", "not a date YYYY-MM-DD (the value is not repeated: it is personal)".into())
        })?;
        let key = self.keys.name_and_birth_date(&nom, date);
        Ok(passerelle_readmodel::persons_by_search_key(&self.pool, key.as_str()).await?)
    }

    /// Territory views are for the RSA authority's own staff.
    async fn territory_caller(
        &self,
        caller: &Caller,
        mut entry: Entry,
        code: &str,
        purpose: Option<&str>,
    ) -> Result<Entry, Failure> {
        let purpose = match Self::purpose(purpose, "X-Motif-Acces") {
            Ok(purpose) => purpose,
            Err(failure) => return self.refuse(entry, failure).await,
        };
        entry.purpose = Some(purpose.code());
        let own = caller.agent.organisation.kind == OrganisationKind::AutoriteRsa
            && caller.agent.organisation.territory.as_deref() == Some(code)
            && matches!(caller.agent.role, Role::ChargeOrientation | Role::GestionnaireRsa)
            && purpose != Purpose::InstructionRsa
            && policy::purpose_allowed(caller.agent.role, purpose);
        if !own {
            return self
                .refuse(
                    entry,
                    Failure::Forbidden(
                        "territory views are for the orientation staff of that territory's RSA authority",
                    ),
                )
                .await;
        }
        Ok(entry)
    }

    /// `GET /territoires/{code}/indicateurs`.
    pub async fn indicators(
        &self,
        caller: &Caller,
        request_id: Uuid,
        code: &str,
        purpose: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut entry =
            self.territory_caller(caller, Self::entry(caller, request_id, "territoire", None), code, purpose).await?;
        let indicators = territory::indicators(&self.pool, code).await?;
        entry.outcome = "shown".into();
        self.journal(entry).await?;
        let pairs =
            |list: &[(String, i64)]| list.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>();
        Ok(json!({
            "territoire": code,
            "foyers_par_etat_droit": pairs(&indicators.households_by_right_state),
            "personnes_sdd": indicators.persons_sdd,
            "sdd_orientes": indicators.sdd_oriented,
            "sdd_non_orientes": indicators.sdd_not_oriented,
            "delai_orientation_jours": {
                "mediane": indicators.orientation_delay_median_days,
                "p90": indicators.orientation_delay_p90_days,
            },
            "sdd_inscrits_france_travail": indicators.sdd_registered_france_travail,
            "orientations_par_type": pairs(&indicators.orientations_by_type),
            "sdd_sans_referent": indicators.sdd_without_referent,
            "parcours": parcours_indicators_json(&indicators.parcours),
        }))
    }

    /// `GET /territoires/{code}/files/{file}?page=&taille=`.
    pub async fn queue(&self, caller: &Caller, request_id: Uuid, query: &QueueQuery<'_>) -> Result<Value, Failure> {
        let QueueQuery { code, file, page, size, purpose } = *query;
        let entry = Self::entry(caller, request_id, "territoire", None);
        let parsed = (|| {
            let queue = territory::Queue::from_name(file).ok_or_else(|| Failure::BadRequest {
                parameter: "file",
                reason: format!(
                    "{file:?} is not one of {}",
                    territory::Queue::ALL.map(territory::Queue::name).join(", ")
                ),
            })?;
            let number = |raw: Option<&str>, parameter: &'static str, default: i64, max: i64| -> Result<i64, Failure> {
                match raw {
                    None => Ok(default),
                    Some(raw) => {
                        raw.parse::<i64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| Failure::BadRequest {
                            parameter,
                            reason: format!("{raw:?} is not a whole number from 1 to {max}"),
                        })
                    }
                }
            };
            Ok((queue, number(page, "page", 1, 1_000_000)?, number(size, "taille", 50, 500)?))
        })();
        let (queue, page, size) = match parsed {
            Ok(parsed) => parsed,
            Err(failure) => return self.refuse(entry, failure).await,
        };
        let mut entry = self.territory_caller(caller, entry, code, purpose).await?;
        let items = territory::queue(&self.pool, code, queue, Utc::now(), size, (page - 1) * size).await?;
        entry.persons_found = items.iter().map(|item| item.person_id).collect();
        entry.outcome = "shown".into();
        self.journal(entry).await?;
        Ok(json!({
            "territoire": code, "file": queue.name(), "page": page, "taille": size,
            "elements": items.iter().map(|item| json!({"person_id": item.person_id, "depuis": item.since})).collect::<Vec<_>>(),
        }))
    }

    /// The console's dashboard of a territory (journaled as a territory view).
    pub async fn dashboard(
        &self,
        caller: &Caller,
        request_id: Uuid,
        code: &str,
        purpose: Option<&str>,
    ) -> Result<Dashboard, Failure> {
        let mut entry =
            self.territory_caller(caller, Self::entry(caller, request_id, "territoire", None), code, purpose).await?;
        let dashboard = Dashboard {
            indicators: territory::indicators(&self.pool, code).await?,
            delay_by_month: territory::orientation_delay_by_month(&self.pool, code).await?,
            queue_sizes: territory::queue_sizes(&self.pool, code, Utc::now()).await?,
        };
        entry.outcome = "shown".into();
        self.journal(entry).await?;
        Ok(dashboard)
    }

    /// A filtered page of a work queue with each person's name and commune (the console), or
    /// with `export` every row up to [`EXPORT_MAX_ROWS`]: one journal entry naming the persons
    /// shown or exported.
    pub async fn queue_rows(
        &self,
        caller: &Caller,
        request_id: Uuid,
        request: &QueueRequest<'_>,
        export: bool,
    ) -> Result<QueuePage, Failure> {
        let action = if export { "export" } else { "territoire" };
        let mut entry = self
            .territory_caller(caller, Self::entry(caller, request_id, action, None), request.code, request.purpose)
            .await?;
        let (limit, offset) =
            if export { (EXPORT_MAX_ROWS, 0) } else { (request.size, (request.page - 1).max(0) * request.size) };
        let (entries, total) = territory::filtered_queue(
            &self.pool,
            request.code,
            request.queue,
            Utc::now(),
            &request.filter,
            limit,
            offset,
        )
        .await?;
        let mut rows = Vec::with_capacity(entries.len());
        for item in entries {
            let identity = self.identity(item.person_id, Some(request.code)).await?;
            let text = |key: &str| identity[key].as_str().map(str::to_owned);
            rows.push(QueueRow {
                person_id: item.person_id,
                since: item.since,
                commune: item.commune,
                nom: text("nom"),
                prenoms: text("prenoms"),
            });
        }
        entry.persons_found = rows.iter().map(|row| row.person_id).collect();
        // Names were opened for each row: the identity section was shown of every person listed.
        entry.sections_shown = vec![Section::Identite.code()];
        entry.outcome = "shown".into();
        self.journal(entry).await?;
        Ok(QueuePage { rows, total })
    }

    /// `GET /journal`: the DPO's view.
    pub async fn journal_read(
        &self,
        caller: &Caller,
        request_id: Uuid,
        query: &JournalQuery,
    ) -> Result<Value, Failure> {
        let mut entry = Self::entry(caller, request_id, "journal", None);
        if caller.agent.role != Role::Dpo {
            return self.refuse(entry, Failure::Forbidden("the journal is read by the DPO role only")).await;
        }
        let parsed = (|| {
            let person_id = query.person_id.as_deref().map(Self::person_id).transpose()?;
            let instant = |raw: Option<&str>, parameter: &'static str| -> Result<Option<DateTime<Utc>>, Failure> {
                raw.map(|raw| {
                    DateTime::parse_from_rfc3339(raw)
                        .map(|t| t.with_timezone(&Utc))
                        .or_else(|_| {
                            NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                        })
                        .map_err(|_| Failure::BadRequest {
                            parameter,
                            reason: format!("{raw:?} is not a date or an RFC 3339 instant"),
                        })
                })
                .transpose()
            };
            if query.agent.as_deref().is_some_and(|agent| {
                agent.is_empty() || agent.chars().count() > 200 || agent.chars().any(char::is_control)
            }) {
                return Err(Failure::BadRequest {
                    parameter: "agent",
                    reason: "an agent uid of 1 to 200 printable characters".into(),
                });
            }
            if let Some(motif) = query.motif.as_deref()
                && Purpose::parse(motif).is_none()
            {
                return Err(Failure::BadRequest {
                    parameter: "motif",
                    reason: format!("{motif:?} is not orientation, accompagnement or instruction_rsa"),
                });
            }
            const OUTCOMES: [&str; 9] = [
                "shown",
                "found",
                "none",
                "moved_out",
                "not_found",
                "refused",
                "invalid",
                "unauthenticated",
                "not_habilitated",
            ];
            if let Some(outcome) = query.resultat.as_deref()
                && !OUTCOMES.contains(&outcome)
            {
                return Err(Failure::BadRequest {
                    parameter: "resultat",
                    reason: format!("{outcome:?} is not one of {}", OUTCOMES.join(", ")),
                });
            }
            let page = query.page.checked::<JournalPosition>(JOURNAL_PAGE, JOURNAL_MAX_ROWS as usize)?;
            Ok((
                person_id,
                instant(query.depuis.as_deref(), "depuis")?,
                instant(query.jusqu_a.as_deref(), "jusqu_a")?,
                page,
            ))
        })();
        let (person_id, since, until, page) = match parsed {
            Ok(parsed) => parsed,
            Err(failure) => return self.refuse(entry, failure).await,
        };
        let scope = journal::DpoScope {
            siret: caller.agent.organisation.siret.clone(),
            territory: caller.agent.organisation.territory.clone(),
        };
        let search = journal::Search {
            person_id,
            agent: query.agent.as_deref(),
            since,
            until,
            purpose: query.motif.as_deref(),
            outcome: query.resultat.as_deref(),
            after: page.after.map(|after| (after.at, after.entry_id)),
        };
        let mut rows = journal::read(&self.pool, &scope, &search, page.limit as i64 + 1).await?;
        let next = (rows.len() > page.limit).then(|| {
            rows.truncate(page.limit);
            rows.last().map(|row| JournalPosition { at: row.at, entry_id: row.entry_id }.encode())
        });
        entry.person_id = person_id;
        entry.outcome = "shown".into();
        self.journal(entry).await?;
        Ok(json!({"entrees": rows, "suivant": next.flatten()}))
    }
}

/// Whether a dossier answer shows `section`.
fn entry_shows(body: &Value, section: Section) -> bool {
    body["sections"].get(section.code()).is_some()
}

/// A person's personal data as opened from their events (never logged: Debug names the
/// fields present only).
#[derive(Clone, Default)]
pub(crate) struct Opened {
    pub nom: Option<String>,
    pub prenoms: Option<String>,
    pub naissance: Option<String>,
    pub nir: Option<Nir>,
    pub commune: Option<String>,
}

impl Opened {
    /// Every field found: older facts need not be opened.
    fn is_complete(&self) -> bool {
        self.nom.is_some()
            && self.prenoms.is_some()
            && self.naissance.is_some()
            && self.nir.is_some()
            && self.commune.is_some()
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("nom", &self.nom.is_some())
            .field("prenoms", &self.prenoms.is_some())
            .field("naissance", &self.naissance.is_some())
            .field("nir", &self.nir.is_some())
            .field("commune", &self.commune.is_some())
            .finish()
    }
}

/// The section an event of the timeline belongs to.
fn section_of(item: &TimelineEntry) -> Section {
    match item.family.as_str() {
        "allocataire" => Section::DroitsRsa,
        "demandeur_emploi" => Section::Emploi,
        "parcours" if item.event_type == "parcours.diagnostic_recorded" => Section::Diagnostic,
        "parcours" => Section::Engagements,
        _ if item.event_type.starts_with("consent.") => Section::Diagnostic,
        _ => Section::Parcours,
    }
}

/// The diagnostic: the latest recorded, its situations (the sensitive ones only where the view
/// allows, the others counted).
fn diagnostic_json(folded: &parcours::Parcours, view: policy::ParcoursView) -> Value {
    let Some(diagnostic) = &folded.diagnostic else { return json!({"diagnostic": null}) };
    let (shown, masked): (Vec<_>, Vec<_>) =
        diagnostic.situations.iter().partition(|situation| view.sensitive || !situation.sensitive);
    json!({
        "diagnostic": {
            "date": diagnostic.recorded_at,
            "source": diagnostic.source,
            "metier_recherche_rome": diagnostic.rome_code,
            "niveau_qualification": diagnostic.niveau_qualification.map(|n| n.code()),
            "dernier_emploi": diagnostic.dernier_emploi,
            "experience": diagnostic.experience,
            "situations": shown.iter().map(|situation| json!({
                "theme": situation.theme.code(),
                "libelle": situation.label,
                "referentiel": situation.known,
                "sensible": situation.sensitive,
                "notee_le": situation.noted_on,
                "notee_par": situation.noted_by,
            })).collect::<Vec<_>>(),
            "situations_sensibles_masquees": masked.len(),
            "illisible": diagnostic.sealed_unreadable,
        }
    })
}

/// The engagements: the plan in force with its actions' statuses, the activity hours, the
/// rendez-vous and the sanctions (only those where the view says so).
fn engagements_json(folded: &parcours::Parcours, view: policy::ParcoursView) -> Value {
    let today = Utc::now().date_naive();
    let sanctions: Vec<Value> = folded
        .sanctions
        .iter()
        .map(|sanction| {
            json!({
                "id": sanction.sanction_id,
                "part_suspendue_pct": sanction.share_percent,
                "duree_mois": sanction.duration_months,
                "debut": sanction.start,
                "motif": if view.sanction_motif { json!(sanction.motif) } else { Value::Null },
                "en_cours": sanction.in_force(today),
                "levee": sanction.lifted.map(|(date, rappel)| json!({"date": date, "rappel": rappel})),
            })
        })
        .collect();
    if view.sanctions_only {
        return json!({"sanctions": sanctions});
    }
    let mut masked = 0usize;
    let plan = folded.plan.as_ref().map(|plan| {
        let sensitive_motif = matches!(plan.hours_motif, Some(HoursMotif::Sante | HoursMotif::Handicap));
        if sensitive_motif && !view.sensitive {
            masked += 1;
        }
        let objectives: Vec<Value> = plan
            .objectives
            .iter()
            .filter(|(theme, _)| {
                let shown = view.sensitive || !theme.sensitive();
                masked += usize::from(!shown);
                shown
            })
            .map(|(theme, label)| json!({"theme": theme.code(), "libelle": label}))
            .collect();
        let actions: Vec<Value> = plan
            .actions
            .iter()
            .filter(|action| {
                let shown = view.sensitive || !action.theme.is_some_and(|theme| theme.sensitive());
                masked += usize::from(!shown);
                shown
            })
            .map(|action| {
                json!({
                    "id": action.action_id,
                    "theme": action.theme.map(|theme| theme.code()),
                    "libelle": action.label,
                    "statut": action.status.code(),
                    "statut_depuis": action.status_since,
                    "debut": action.start,
                    "fin": action.end,
                    "prescripteur_siret": action.prescriber_siret,
                })
            })
            .collect();
        json!({
            "date": plan.set_at,
            "source": plan.source,
            "signe_le": plan.signed_on,
            "revise_le": plan.revised_on,
            "heures_hebdomadaires": plan.weekly_hours,
            "motif_heures": plan.hours_motif.filter(|_| view.sensitive || !sensitive_motif).map(|m| m.code()),
            "objectifs": objectives,
            "actions": actions,
        })
    });
    json!({
        "plan": plan,
        "heures_declarees": folded.hours.iter().map(|(month, hours)| json!({
            "mois": month.format("%Y-%m").to_string(), "heures": hours,
        })).collect::<Vec<_>>(),
        "rendez_vous": folded.rendez_vous.iter().map(|rdv| json!({
            "id": rdv.rdv_id,
            "date": rdv.at,
            "structure_siret": rdv.structure_siret,
            "objet": rdv.objet.map(|objet| objet.code()),
            "statut": rdv.status.code(),
        })).collect::<Vec<_>>(),
        "sanctions": sanctions,
        "elements_sensibles_masques": masked,
    })
}

/// The parcours indicators of a territory, with the shares they imply (null without a base).
fn parcours_indicators_json(parcours: &territory::ParcoursIndicators) -> Value {
    let share = |part: i64, whole: i64| (whole > 0).then(|| part as f64 / whole as f64);
    let outcomes = parcours.rendez_vous_honoured + parcours.rendez_vous_missed;
    json!({
        "orientes_depuis_2_mois": parcours.oriented_two_months_ago,
        "plan_signe_sous_2_mois": parcours.plan_within_two_months,
        "part_plan_signe_sous_2_mois": share(parcours.plan_within_two_months, parcours.oriented_two_months_ago),
        "delai_orientation_plan_jours": {"mediane": parcours.plan_delay_median_days},
        "rendez_vous_honores": parcours.rendez_vous_honoured,
        "rendez_vous_manques": parcours.rendez_vous_missed,
        "taux_rendez_vous_manques": share(parcours.rendez_vous_missed, outcomes),
        "sanctions_en_cours": parcours.sanctions_in_force,
    })
}

/// Opens the sealed personal data of a person's events with their subjects' data keys, each key
/// read once (a subject's events share it). None where it cannot be opened (a destroyed key).
struct SealedOpener<'a> {
    store: &'a KeyStore,
    keys: std::collections::HashMap<Uuid, Option<passerelle_eventlog::shredding::DataKey>>,
}

impl<'a> SealedOpener<'a> {
    fn new(store: &'a KeyStore) -> Self {
        Self { store, keys: std::collections::HashMap::new() }
    }

    /// Reads the keys of `key_ids` in one round trip (a key not found was destroyed: its data
    /// stays closed). On a failure the keys are left to [`SealedOpener::open`], one by one.
    async fn prefetch(&mut self, key_ids: impl Iterator<Item = Uuid>) {
        let mut wanted: Vec<Uuid> = key_ids.filter(|id| !self.keys.contains_key(id)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        if let Ok(mut found) = self.store.keys_by_id(&wanted).await {
            for id in wanted {
                self.keys.insert(id, found.remove(&id));
            }
        }
    }

    async fn open(&mut self, family: &str, source: &str, event_id: &str, sealed: Sealed) -> Option<PersonalData> {
        let key_id = sealed.key_id;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.keys.entry(key_id) {
            slot.insert(self.store.key_by_id(key_id).await.ok());
        }
        let key = self.keys.get(&key_id)?.as_ref()?;
        let associated = associated_data("personal", family, source, key_id, event_id);
        let plain = key.open(&sealed, &associated).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

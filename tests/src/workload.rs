//! Random but realistic event histories for many persons, and the oracle they are checked
//! against: an in-memory fold written here from DOMAIN.md, sharing no code with the projector.
//! The generator counts its hard cases and fails below a minimum, so a test cannot pass on easy
//! histories. Deterministic from the seed. Used by the property and crash tests of the
//! projection (`tests/projector_property.rs`) and by the fault campaign (`campaign`).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use passerelle_domain::{FranceTravailId, Nir};
use passerelle_eventlog::subject::SubjectKeys;
use passerelle_importers::generate::Sequence as Random;
use passerelle_ingest::proto::{
    self, AllocataireEvent, DemandeurEmploiEvent, Household, Location, OrientationEvent, ParcoursEvent, Person,
    allocataire_event::Fact as Caf, demandeur_emploi_event::Fact as Ft, orientation_event::Fact as Cd,
    parcours_event::Fact as Pa,
};

/// What the oracle knows of a fact: its effect on the dossier, in the oracle's own terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Sdd(bool),
    RightOpen,
    RightSuspended,
    Opposition(bool),
    Consent(bool),
    Referent(&'static str),
    ReferentEnded(&'static str),
    Oriented(&'static str),
    FtRegistered,
    FtRadiated,
    /// The département's plan d'action, set whole, its one action at this status (a parcours
    /// fact: stored and folded at read time, corrected and retracted like the others).
    Plan(&'static str),
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub id: String,
    pub person: usize,
    pub minute: i64,
    pub territory: &'static str,
    pub effect: Effect,
    /// The event this one corrects.
    pub corrects: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Synthetic {
    pub nir: Option<String>,
    pub ft: Option<String>,
    /// Events of this person carry only the FT id until this minute (secondary id first).
    pub ft_only_until: i64,
}

#[derive(Default, Debug)]
pub struct HardCases {
    pub out_of_order: u32,
    pub duplicates: u32,
    pub secondary_id_only: u32,
    pub corrections: u32,
    pub retractions: u32,
    pub moves: u32,
}

pub fn nir_of(index: usize) -> String {
    // Born in 1980-1999, department 52, commune and order from the index: valid and distinct.
    format!("{}{:02}{:02}52{:03}{:03}", 1 + index % 2, 80 + index % 20, 1 + index % 12, 100 + index % 800, 1 + index)
}

pub fn instant(minute: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339("2026-01-05T08:00:00Z").expect("base") + chrono::Duration::minutes(minute))
        .to_rfc3339()
}

pub fn generate(seed: u64, persons: usize) -> (Vec<Synthetic>, Vec<Generated>, Vec<String>, HardCases) {
    let mut random = Random(seed);
    let mut people = Vec::new();
    let mut events: Vec<Generated> = Vec::new();
    let mut retracted = Vec::new();
    for index in 0..persons {
        let has_ft = random.chance(60);
        let ft_first = has_ft && random.chance(40);
        let never_nir = has_ft && random.chance(20);
        people.push(Synthetic {
            nir: (!never_nir).then(|| nir_of(index)),
            ft: has_ft.then(|| format!("{:011}", 30_000_000_000u64 + index as u64)),
            ft_only_until: if never_nir {
                i64::MAX
            } else if ft_first {
                100
            } else {
                -1
            },
        });
        let mut minute = random.below(50) as i64;
        let count = 4 + random.below(6);
        let mut territory = "52";
        for step in 0..count {
            minute += 1 + random.below(30) as i64;
            if random.chance(10) {
                territory = if territory == "52" { "51" } else { "52" };
            }
            let effect = match random.below(10) {
                0 | 1 => Effect::Sdd(random.chance(80)),
                2 => {
                    if random.chance(70) {
                        Effect::RightOpen
                    } else {
                        Effect::RightSuspended
                    }
                }
                3 => Effect::Opposition(random.chance(60)),
                4 => Effect::Consent(random.chance(60)),
                5 => {
                    let uid = ["agent-a", "agent-b"][random.below(2) as usize];
                    if random.chance(75) { Effect::Referent(uid) } else { Effect::ReferentEnded(uid) }
                }
                6 => Effect::Oriented(["PRO", "SOCIO_PRO", "SOCIAL"][random.below(3) as usize]),
                7 | 8 if has_ft => {
                    if random.chance(75) {
                        Effect::FtRegistered
                    } else {
                        Effect::FtRadiated
                    }
                }
                9 => Effect::Plan(PLAN_STATUSES[random.below(3) as usize]),
                _ => Effect::Sdd(true),
            };
            let orientation = is_departement(&effect);
            events.push(Generated {
                id: format!("prop-{index}-{step}"),
                person: index,
                minute,
                // A département's fact is pushed by the person's authority at the time: set
                // below, once the CAF facts that decide it are known.
                territory: if orientation { "" } else { territory },
                effect,
                corrects: None,
            });
        }
    }
    // Corrections and retractions of earlier events.
    let originals = events.len();
    for index in 0..originals {
        if random.chance(6) {
            let original = events[index].clone();
            let corrected = match original.effect {
                Effect::Sdd(value) => Some(Effect::Sdd(!value)),
                Effect::Plan(status) => {
                    Some(Effect::Plan(if status == "ABANDONNEE" { "REALISEE" } else { "ABANDONNEE" }))
                }
                _ => None,
            };
            if let Some(effect) = corrected {
                events.push(Generated {
                    id: format!("{}-corr", original.id),
                    minute: original.minute + 1000 + index as i64,
                    effect,
                    corrects: Some(original.id.clone()),
                    ..original
                });
            }
        } else if random.chance(5) && !decides_a_move(&events, index) {
            retracted.push(events[index].id.clone());
        }
    }
    // Each département fact comes from the person's authority when it happened, as the CAF
    // facts that stand decide it (ingestion refuses others, and they would count for nothing).
    for index in 0..events.len() {
        if events[index].territory.is_empty() {
            let authority = authority_at(&events, &retracted, events[index].person, events[index].minute);
            events[index].territory = authority.unwrap_or("52");
        }
    }
    let mut cases = HardCases {
        corrections: (events.len() - originals) as u32,
        retractions: retracted.len() as u32,
        ..HardCases::default()
    };
    for (index, person) in people.iter().enumerate() {
        let mine: Vec<&Generated> = events.iter().filter(|e| e.person == index).collect();
        let caf: Vec<&&Generated> = mine.iter().filter(|e| is_caf(&e.effect)).collect();
        cases.moves += caf.windows(2).filter(|w| w[0].territory != w[1].territory).count() as u32;
        if person.ft_only_until >= 0 {
            cases.secondary_id_only += mine.iter().filter(|e| e.minute <= person.ft_only_until).count() as u32;
        }
    }
    (people, events, retracted, cases)
}

pub fn is_caf(effect: &Effect) -> bool {
    matches!(effect, Effect::Sdd(_) | Effect::RightOpen | Effect::RightSuspended)
}

pub fn is_departement(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::Opposition(_)
            | Effect::Consent(_)
            | Effect::Referent(_)
            | Effect::ReferentEnded(_)
            | Effect::Oriented(_)
            | Effect::Plan(_)
    )
}

/// The statuses the generated plans' action takes.
const PLAN_STATUSES: [&str; 3] = ["PREVUE", "EN_COURS", "REALISEE"];

/// The person's CAF facts that stand (not corrected, not retracted), oldest first.
pub fn standing_caf<'a>(events: &'a [Generated], retracted: &[String], person: usize) -> Vec<&'a Generated> {
    let corrected: Vec<&String> = events.iter().filter_map(|e| e.corrects.as_ref()).collect();
    let mut caf: Vec<&Generated> = events
        .iter()
        .filter(|e| e.person == person && is_caf(&e.effect))
        .filter(|e| !corrected.contains(&&e.id) && !retracted.contains(&e.id))
        .collect();
    caf.sort_by_key(|e| e.minute);
    caf
}

/// The person's authority at `minute` (DOMAIN.md: the CAF dossier's receiving authority): the
/// latest standing CAF fact at or before it, else the first one.
pub fn authority_at(events: &[Generated], retracted: &[String], person: usize, minute: i64) -> Option<&'static str> {
    let caf = standing_caf(events, retracted, person);
    caf.iter().take_while(|e| e.minute <= minute).last().or(caf.first()).map(|e| e.territory)
}

/// Whether retracting the CAF fact `index` would change when the person moved.
pub fn decides_a_move(events: &[Generated], index: usize) -> bool {
    if !is_caf(&events[index].effect) {
        return false;
    }
    let caf = standing_caf(events, &[], events[index].person);
    let Some(at) = caf.iter().position(|e| e.id == events[index].id) else { return true };
    let territory = caf[at].territory;
    (at > 0 && caf[at - 1].territory != territory) || caf.get(at + 1).is_some_and(|next| next.territory != territory)
}

/// The oracle: the dossier DOMAIN.md describes, folded from the generated facts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expected {
    pub territory: Option<String>,
    pub sdd: bool,
    pub right_state: Option<String>,
    pub opposition: bool,
    pub consent: bool,
    pub referent: Option<String>,
    pub orientation: Option<String>,
    pub ft_status: Option<String>,
    /// The status of the action of the person's plan in force (the latest standing one).
    pub plan: Option<String>,
    pub timeline: usize,
}

pub fn oracle(events: &[Generated], retracted: &[String], person: usize) -> Expected {
    let corrected: Vec<&String> = events.iter().filter_map(|e| e.corrects.as_ref()).collect();
    let mut mine: Vec<&Generated> = events.iter().filter(|e| e.person == person).collect();
    mine.sort_by_key(|e| e.minute);
    let mut expected = Expected {
        timeline: mine.len() + retracted.iter().filter(|r| mine.iter().any(|e| &&e.id == r)).count(),
        ..Expected::default()
    };
    for event in mine {
        if corrected.contains(&&event.id) || retracted.contains(&event.id) {
            continue;
        }
        if is_departement(&event.effect)
            && authority_at(events, retracted, person, event.minute) != Some(event.territory)
        {
            // Not the person's authority at the time: it decides nothing.
            continue;
        }
        if is_caf(&event.effect) {
            if expected.territory.as_deref().is_some_and(|t| t != event.territory) {
                // A move ends the former authority's référent.
                expected.referent = None;
            }
            expected.territory = Some(event.territory.to_owned());
        }
        match &event.effect {
            Effect::Sdd(value) => expected.sdd = *value,
            Effect::RightOpen => expected.right_state = Some("2".into()),
            Effect::RightSuspended => expected.right_state = Some("4".into()),
            Effect::Opposition(value) => expected.opposition = *value,
            Effect::Consent(value) => expected.consent = *value,
            Effect::Referent(uid) => expected.referent = Some((*uid).to_owned()),
            Effect::ReferentEnded(uid) => {
                // Ending a référent ends that one only.
                if expected.referent.as_deref() == Some(*uid) {
                    expected.referent = None;
                }
            }
            Effect::Oriented(kind) => expected.orientation = Some((*kind).to_owned()),
            Effect::FtRegistered => expected.ft_status = Some("INSCRIT".into()),
            Effect::FtRadiated => expected.ft_status = Some("RADIATION".into()),
            Effect::Plan(status) => expected.plan = Some((*status).to_owned()),
        }
    }
    expected
}

pub enum Request {
    Caf(AllocataireEvent),
    Ft(DemandeurEmploiEvent),
    Cd(OrientationEvent),
    Parcours(ParcoursEvent),
}

/// The API request for a generated fact.
pub fn request(person: &Synthetic, index: usize, event: &Generated) -> Request {
    let ft_only = event.minute <= person.ft_only_until;
    let who = Some(Person {
        nir: if ft_only { String::new() } else { person.nir.clone().unwrap_or_default() },
        france_travail_id: person.ft.clone().unwrap_or_default(),
        ..Person::default()
    });
    let location = Some(Location { receiving_authority: format!("0{}", event.territory), commune: String::new() });
    let occurred_at = instant(event.minute);
    let corrects = event.corrects.clone().unwrap_or_default();
    let agent = |uid: &str| proto::Agent {
        uid: uid.into(),
        email: format!("{uid}@cd52.example"),
        siret: "73282932000074".into(),
    };
    match &event.effect {
        Effect::Sdd(_) | Effect::RightOpen | Effect::RightSuspended => Request::Caf(AllocataireEvent {
            event_id: event.id.clone(),
            occurred_at,
            person: who,
            household: Some(Household {
                organisme: "521".into(),
                matricule: format!("{:07}", 4_000_000 + index),
                role: "DEM".into(),
            }),
            location,
            corrects_event_id: corrects,
            fact: Some(match &event.effect {
                Effect::Sdd(value) => Caf::SddChanged(proto::SddChanged { soumis: *value }),
                Effect::RightOpen => Caf::RightOpened(proto::RsaRightOpened::default()),
                _ => Caf::RightSuspended(proto::RsaRightSuspended {
                    scope: "PAYMENT".into(),
                    motif: "06".into(),
                    date_suspension: String::new(),
                }),
            }),
        }),
        Effect::FtRegistered | Effect::FtRadiated => Request::Ft(DemandeurEmploiEvent {
            event_id: event.id.clone(),
            occurred_at,
            person: who,
            location,
            corrects_event_id: corrects,
            fact: Some(if event.effect == Effect::FtRegistered {
                Ft::Inscription(proto::Inscription { categorie: "1".into(), ..Default::default() })
            } else {
                Ft::Radiation(proto::Radiation { motif: "AB".into(), date_radiation: String::new() })
            }),
        }),
        Effect::Plan(status) => Request::Parcours(ParcoursEvent {
            event_id: event.id.clone(),
            occurred_at,
            person: who,
            location,
            corrects_event_id: corrects,
            fact: Some(Pa::EngagementPlanSet(proto::EngagementPlanSet {
                signed_on: "2026-01-05".into(),
                actions: vec![proto::PlanActionItem {
                    action_id: "a-1".into(),
                    theme: "MOBILITE".into(),
                    label: "Permis B".into(),
                    status: (*status).into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        }),
        _ => Request::Cd(OrientationEvent {
            event_id: event.id.clone(),
            occurred_at,
            person: who,
            location,
            corrects_event_id: corrects,
            fact: Some(match &event.effect {
                Effect::Opposition(true) => Cd::OppositionRecorded(proto::OppositionRecorded {}),
                Effect::Opposition(false) => Cd::OppositionWithdrawn(proto::OppositionWithdrawn {}),
                Effect::Consent(true) => Cd::ConsentGiven(proto::ConsentGiven {}),
                Effect::Consent(false) => Cd::ConsentWithdrawn(proto::ConsentWithdrawn {}),
                Effect::Referent(uid) => Cd::ReferentAssigned(proto::ReferentAssigned { referent: Some(agent(uid)) }),
                Effect::ReferentEnded(uid) => Cd::ReferentEnded(proto::ReferentEnded { uid: (*uid).into() }),
                Effect::Oriented(kind) => {
                    Cd::OrientationDecided(proto::OrientationDecided { r#type: (*kind).into(), ..Default::default() })
                }
                _ => unreachable!("orientation facts only"),
            }),
        }),
    }
}

/// The retraction of `target`, in the family of the original, from the same institution.
pub fn retraction(original: &Request, target: &str) -> Request {
    let fact = proto::Retraction { retracted_event_id: target.into(), reason: String::new() };
    let id = format!("{target}-retr");
    match original {
        Request::Caf(e) => Request::Caf(AllocataireEvent {
            event_id: id,
            occurred_at: instant(5000),
            corrects_event_id: String::new(),
            fact: Some(Caf::Retraction(fact)),
            ..e.clone()
        }),
        Request::Ft(e) => Request::Ft(DemandeurEmploiEvent {
            event_id: id,
            occurred_at: instant(5000),
            corrects_event_id: String::new(),
            fact: Some(Ft::Retraction(fact)),
            ..e.clone()
        }),
        Request::Cd(e) => Request::Cd(OrientationEvent {
            event_id: id,
            occurred_at: instant(5000),
            corrects_event_id: String::new(),
            fact: Some(Cd::Retraction(fact)),
            ..e.clone()
        }),
        Request::Parcours(e) => Request::Parcours(ParcoursEvent {
            event_id: id,
            occurred_at: instant(5000),
            corrects_event_id: String::new(),
            fact: Some(Pa::Retraction(fact)),
            ..e.clone()
        }),
    }
}

/// A generated workload: persons, their facts, the retracted ones, and the requests per family.
pub struct Workload {
    pub people: Vec<Synthetic>,
    pub events: Vec<Generated>,
    pub retracted: Vec<String>,
    pub caf: Vec<AllocataireEvent>,
    pub ft: Vec<DemandeurEmploiEvent>,
    /// The département facts, with the authority that pushes them.
    pub cd: Vec<(&'static str, OrientationEvent)>,
    /// The département's parcours facts, with the authority that pushes them.
    pub parcours: Vec<(&'static str, ParcoursEvent)>,
    pub duplicates: usize,
}

impl Workload {
    pub fn expected_pairs(&self) -> usize {
        self.events.len() + self.retracted.len()
    }
}

pub fn workload(seed: u64, persons: usize) -> Workload {
    let (people, events, retracted, mut cases) = generate(seed, persons);
    // Requests in a shuffled order, some sent twice (retries), retractions among them.
    let mut random = Random(seed ^ 0x5eed);
    let mut requests: Vec<(usize, i64, Request)> = Vec::new();
    for event in &events {
        let built = request(&people[event.person], event.person, event);
        if retracted.contains(&event.id) {
            requests.push((event.person, 9000, retraction(&built, &event.id)));
        }
        requests.push((event.person, event.minute, built));
    }
    for index in (1..requests.len()).rev() {
        let other = random.below(index as u64 + 1) as usize;
        requests.swap(index, other);
    }
    let mut latest_sent: HashMap<usize, i64> = HashMap::new();
    for (person, minute, _) in &requests {
        let previous = latest_sent.entry(*person).or_insert(i64::MIN);
        if *previous > *minute {
            cases.out_of_order += 1;
        }
        *previous = (*previous).max(*minute);
    }
    let (mut caf, mut ft, mut cd, mut parcours) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let authority_of: HashMap<String, &'static str> = events.iter().map(|e| (e.id.clone(), e.territory)).collect();
    for (_, _, request) in requests {
        let copies = if random.chance(12) {
            cases.duplicates += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            match &request {
                Request::Caf(e) => caf.push(e.clone()),
                Request::Ft(e) => ft.push(e.clone()),
                Request::Cd(e) => {
                    let original = e.event_id.trim_end_matches("-retr");
                    cd.push((authority_of.get(original).copied().unwrap_or("52"), e.clone()));
                }
                Request::Parcours(e) => {
                    let original = e.event_id.trim_end_matches("-retr");
                    parcours.push((authority_of.get(original).copied().unwrap_or("52"), e.clone()));
                }
            }
        }
    }
    eprintln!(
        "seed {seed}: {persons} persons, {} requests, hard cases {cases:?}",
        caf.len() + ft.len() + cd.len() + parcours.len()
    );
    assert!(cases.out_of_order >= 20 && cases.duplicates >= 10 && cases.secondary_id_only >= 5, "{cases:?}");
    assert!(cases.corrections >= 3 && cases.retractions >= 3 && cases.moves >= 5, "{cases:?}");
    Workload { people, events, retracted, caf, ft, cd, parcours, duplicates: cases.duplicates as usize }
}

pub async fn applied(pool: &sqlx::PgPool) -> anyhow::Result<usize> {
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM applied_events").fetch_one(pool).await?;
    Ok(applied as usize)
}

/// Waits until every pair is applied and the offsets reached every record.
pub async fn wait_projected(
    pool: &sqlx::PgPool,
    work: &Workload,
    records: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let done = applied(pool).await?;
        let (offsets,): (i64,) = sqlx::query_as("SELECT COALESCE(sum(next_offset), 0)::bigint FROM projector_offsets")
            .fetch_one(pool)
            .await?;
        if done == work.expected_pairs() && offsets as usize == records {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "projection incomplete: {done} of {} pairs, offsets {offsets} of {records}",
            work.expected_pairs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Compares every projected dossier with the oracle.
pub async fn compare_with_oracle(pool: &sqlx::PgPool, keys: &SubjectKeys, work: &Workload) -> anyhow::Result<()> {
    let (dead,): (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters").fetch_one(pool).await?;
    anyhow::ensure!(dead == 0, "{dead} dead letters: retries are duplicates, not conflicts");
    let mut mismatches = BTreeMap::new();
    for (index, person) in work.people.iter().enumerate() {
        // The strongest identifier the person's events carried: their NIR, unless every event
        // came while only the FT id was known.
        let nir_seen = work.events.iter().any(|e| e.person == index && e.minute > person.ft_only_until);
        let subject = match (&person.nir, nir_seen) {
            (Some(nir), true) => keys.nir(&Nir::parse(nir)?),
            _ => keys.france_travail(&FranceTravailId::parse(person.ft.as_deref().unwrap_or_default())?),
        };
        let person_id = passerelle_readmodel::person_of_subject(pool, subject.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("person {index}: no person in the read models"))?;
        if let Some(ft_id) = &person.ft {
            let by_ft = passerelle_readmodel::person_of_subject(
                pool,
                keys.france_travail(&FranceTravailId::parse(ft_id)?).as_str(),
            )
            .await?;
            anyhow::ensure!(by_ft == Some(person_id), "person {index}: the FT id and the NIR are not one person");
        }
        let dossier = passerelle_readmodel::dossier(pool, person_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("person {index}: no dossier"))?;
        let timeline = passerelle_readmodel::timeline(pool, person_id).await?;
        // The plan in force as the API reads it: the stored facts in force, those of a département
        // counted only from the person's authority at the time, folded (not through HTTP).
        let authorities = passerelle_readmodel::parcours::authorities(pool, person_id).await?;
        let items: Vec<passerelle_readmodel::parcours::Item> = passerelle_readmodel::parcours::rows(pool, person_id)
            .await?
            .into_iter()
            .filter_map(|row| {
                Some(passerelle_readmodel::parcours::Item {
                    payload: row.payload()?,
                    source: row.source,
                    occurred_at: row.occurred_at,
                    territory: row.territory,
                    detail: None,
                })
            })
            .filter(|item| passerelle_readmodel::parcours::counts(item, &authorities))
            .collect();
        let plan = passerelle_readmodel::parcours::fold(&items).plan;
        let actual = Expected {
            territory: dossier.territory.clone(),
            sdd: dossier.sdd,
            right_state: dossier.right_state.clone(),
            opposition: dossier.opposition,
            consent: dossier.consent_diagnostic,
            referent: dossier.referent_uid.clone(),
            orientation: dossier.orientation_type.clone(),
            ft_status: dossier.ft_status.clone(),
            plan: plan.and_then(|plan| plan.actions.first().map(|action| action.status.code().to_owned())),
            timeline: timeline.len(),
        };
        let expected = oracle(&work.events, &work.retracted, index);
        if actual != expected {
            mismatches.insert(index, (expected, actual));
        }
    }
    anyhow::ensure!(mismatches.is_empty(), "{} dossiers differ from the oracle: {mismatches:#?}", mismatches.len());
    let (persons,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM persons WHERE merged_into IS NULL").fetch_one(pool).await?;
    anyhow::ensure!(
        persons as usize == work.people.len(),
        "{persons} persons for {} people: one each, no more",
        work.people.len()
    );
    Ok(())
}

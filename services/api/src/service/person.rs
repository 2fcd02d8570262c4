//! The person's own space, in the service layer: finding the person from FranceConnect's
//! identité pivot (which carries no NIR), their dossier in full, who read it and why, and
//! everything the hub holds about them. Every step is journaled, without personal data in clear.
//! The person is always the one the session holds: nothing here takes a person id from a caller.

use chrono::Datelike as _;
use passerelle_eventlog::subject::normalise_name;

use super::*;

/// FranceConnect's identité pivot.
#[derive(Clone)]
pub struct Pivot {
    pub given_name: String,
    pub family_name: String,
    pub birthdate: NaiveDate,
    /// `male` or `female`.
    pub gender: String,
    /// INSEE code of the commune of birth (persons born in France).
    pub birthplace: Option<String>,
    /// INSEE code of the country of birth (99100: France).
    pub birthcountry: String,
}

impl std::fmt::Debug for Pivot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pivot(<redacted>)")
    }
}

/// The outcome of an identification. No match and several matches are one answer: the page
/// that follows must not tell who exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identification {
    Matched(Uuid),
    NotIdentified,
}

/// The first given name, whole (a hyphenated one stays one name: Jean-Pierre is not Jean), as
/// the hub compares names.
fn first_given_name(names: &str) -> String {
    normalise_name(names.split_whitespace().next().unwrap_or(""))
}

/// Whether what the hub holds about a person agrees with the pivot identity: birth name, first
/// given name and full birth date, then the NIR's own digits: sex, year and month of birth
/// (a month of 20 or more means unknown), and place of birth (the commune's INSEE code for
/// persons born in France; 99 and the country's code otherwise).
fn agrees(pivot: &Pivot, opened: &Opened) -> bool {
    let (Some(nom), Some(prenoms), Some(naissance), Some(nir)) =
        (&opened.nom, &opened.prenoms, &opened.naissance, &opened.nir)
    else {
        return false;
    };
    if normalise_name(nom) != normalise_name(&pivot.family_name)
        || first_given_name(prenoms) != first_given_name(&pivot.given_name)
        || naissance != &pivot.birthdate.to_string()
    {
        return false;
    }
    let digits = nir.core();
    let sex_ok = match pivot.gender.as_str() {
        "male" => matches!(&digits[0..1], "1" | "3" | "7"),
        "female" => matches!(&digits[0..1], "2" | "4" | "8"),
        _ => false,
    };
    let year_ok = digits[1..3] == format!("{:02}", pivot.birthdate.year() % 100);
    let month: u32 = digits[3..5].parse().unwrap_or(0);
    let month_ok = month >= 20 || month == pivot.birthdate.month();
    let place_ok = if pivot.birthcountry == "99100" {
        pivot.birthplace.as_deref().is_some_and(|commune| digits[5..10] == *commune)
    } else {
        digits[5..7] == *"99" && pivot.birthcountry.len() == 5 && digits[7..10] == pivot.birthcountry[2..5]
    };
    sex_ok && year_ok && month_ok && place_ok
}

/// Everything the hub holds about the person, for their space and their download.
#[derive(Debug, Clone)]
pub struct OwnData {
    pub person_id: Uuid,
    pub dossier: Dossier,
    pub identity: OwnIdentity,
    pub events: Vec<TimelineEntry>,
    pub reads: Vec<journal::Row>,
    /// Their diagnostic and engagements, whole: the sensitive items are theirs to see.
    pub diagnostic: serde_json::Value,
    pub engagements: serde_json::Value,
}

/// The person's identity as the hub holds it (shown to them only).
#[derive(Clone, serde::Serialize)]
pub struct OwnIdentity {
    pub nom: Option<String>,
    pub prenoms: Option<String>,
    pub date_naissance: Option<String>,
    pub nir_masque: Option<String>,
    pub commune: Option<String>,
}

impl std::fmt::Debug for OwnIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnIdentity(<redacted>)")
    }
}

/// Reads of one's dossier shown at most (the most recent).
const READS_SHOWN: i64 = 500;

impl Api {
    /// Finds the person of a FranceConnect sign-in: the persons the search index holds under the
    /// pivot's birth name and date, kept when their sealed data agree with every part of the
    /// pivot; linked only when exactly one remains. Journaled with the outcome and, when
    /// matched, the person id (no name, no date).
    pub async fn identify_person(&self, request_id: Uuid, pivot: &Pivot) -> Result<Identification, Failure> {
        let key = self.keys.name_and_birth_date(&pivot.family_name, pivot.birthdate);
        let candidates = passerelle_readmodel::persons_by_search_key(&self.pool, key.as_str()).await?;
        let mut matched = Vec::new();
        for person_id in candidates {
            if agrees(pivot, &self.personal(person_id).await?) {
                matched.push(person_id);
            }
        }
        let (identification, outcome) = match matched.as_slice() {
            [only] => (Identification::Matched(*only), "matched"),
            [] => (Identification::NotIdentified, "not_identified"),
            _ => (Identification::NotIdentified, "ambiguous"),
        };
        self.journal(Entry {
            request_id,
            channel: Channel::Person,
            action: "identification",
            person_id: match identification {
                Identification::Matched(person_id) => Some(person_id),
                Identification::NotIdentified => None,
            },
            outcome: outcome.into(),
            ..Entry::default()
        })
        .await?;
        Ok(identification)
    }

    /// The subject key under which the signed-in person's own choices go on the log: the
    /// strongest key linked to them (None when erased since sign-in).
    pub async fn own_subject_key(&self, person_id: Uuid) -> Result<Option<String>, Failure> {
        let Some(current) = passerelle_readmodel::current_person(&self.pool, person_id).await? else {
            return Ok(None);
        };
        Ok(passerelle_readmodel::strongest_subject_key(&self.pool, current).await?)
    }

    /// Whether a choice the person recorded (`event_id`) is folded into their dossier, so that
    /// the next read by any agent follows it.
    pub async fn own_choice_applied(&self, event_id: &str) -> Result<bool, Failure> {
        Ok(passerelle_readmodel::event_projected(&self.pool, passerelle_domain::event::PERSON_SOURCE, event_id).await?)
    }

    /// Everything the hub holds about the signed-in person: their dossier, identity, facts and
    /// the reads of their dossier by agents. `action` names the page in the journal
    /// (`dossier_personne`, `consultations_personne`, `choix_personne`, `export_personne`).
    pub async fn own_data(&self, request_id: Uuid, person_id: Uuid, action: &'static str) -> Result<OwnData, Failure> {
        let (dossier, entry) = self.own(request_id, person_id, action).await?;
        let opened = self.personal(dossier.person_id).await?;
        let events = passerelle_readmodel::timeline(&self.pool, dossier.person_id).await?;
        let reads = journal::reads_about(&self.pool, dossier.person_id, READS_SHOWN).await?;
        let whole = crate::policy::ParcoursView {
            sensitive: true,
            sanctions_only: false,
            own_authority_only: false,
            sanction_motif: true,
        };
        let parcours = self.parcours(dossier.person_id, whole, None).await?;
        self.journal(entry).await?;
        Ok(OwnData {
            person_id: dossier.person_id,
            identity: OwnIdentity {
                nom: opened.nom,
                prenoms: opened.prenoms,
                date_naissance: opened.naissance,
                nir_masque: opened.nir.as_ref().map(Nir::masked),
                commune: opened.commune,
            },
            dossier,
            events,
            reads,
            diagnostic: super::diagnostic_json(&parcours, whole),
            engagements: super::engagements_json(&parcours, whole),
        })
    }

    /// The signed-in person's dossier alone (their choices page needs neither their sealed
    /// identity, nor their facts, nor who read them), journaled as [`Api::own_data`] is.
    pub async fn own_dossier(
        &self,
        request_id: Uuid,
        person_id: Uuid,
        action: &'static str,
    ) -> Result<Dossier, Failure> {
        let (dossier, entry) = self.own(request_id, person_id, action).await?;
        self.journal(entry).await?;
        Ok(dossier)
    }

    /// The person's current dossier (following a merge), and the journal row of the page that
    /// shows it; an erased person's read is journaled as `not_found` here.
    async fn own(&self, request_id: Uuid, person_id: Uuid, action: &'static str) -> Result<(Dossier, Entry), Failure> {
        let mut entry =
            Entry { request_id, channel: Channel::Person, action, person_id: Some(person_id), ..Entry::default() };
        let current = passerelle_readmodel::current_person(&self.pool, person_id).await?;
        let dossier = match current {
            Some(current) => passerelle_readmodel::dossier(&self.pool, current).await?,
            None => None,
        };
        let Some(dossier) = dossier else {
            // Erased since sign-in: nothing left to show.
            entry.outcome = "not_found".into();
            self.journal(entry).await?;
            return Err(Failure::NotFound);
        };
        entry.person_id = Some(dossier.person_id);
        entry.sections_shown = Section::ALL.iter().map(|section| section.code()).collect();
        entry.outcome = "shown".into();
        Ok((dossier, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(nir: &str) -> Opened {
        Opened {
            nom: Some("MARTIN".into()),
            prenoms: Some("Paul Louis".into()),
            naissance: Some("1985-07-12".into()),
            nir: Nir::parse(nir).ok(),
            commune: None,
        }
    }

    fn pivot() -> Pivot {
        Pivot {
            given_name: "Paul".into(),
            family_name: "Martin".into(),
            birthdate: NaiveDate::from_ymd_opt(1985, 7, 12).expect("date"),
            gender: "male".into(),
            birthplace: Some("52121".into()),
            birthcountry: "99100".into(),
        }
    }

    #[test]
    fn the_pivot_agrees_with_the_nir_digits_and_the_sealed_identity() {
        assert!(agrees(&pivot(), &opened("1850752121003")));
        // Another sex, year, month, or place of birth in the NIR: not the same person.
        for other in ["2850752121003", "1860752121003", "1850852121003", "1850752122003", "1850799121003"] {
            assert!(!agrees(&pivot(), &opened(other)), "{other}");
        }
        // An unknown month of birth in the NIR (20 and more) does not contradict.
        assert!(agrees(&pivot(), &opened("1852052121003")));
        // A hyphenated given name is one name: Jean-Pierre is neither Jean nor Jean-Marc.
        let jean_pierre = Opened { prenoms: Some("Jean-Pierre".into()), ..opened("1850752121003") };
        assert!(!agrees(&Pivot { given_name: "Jean-Marc".into(), ..pivot() }, &jean_pierre));
        assert!(!agrees(&Pivot { given_name: "Jean".into(), ..pivot() }, &jean_pierre));
        assert!(agrees(&Pivot { given_name: "Jean-Pierre Louis".into(), ..pivot() }, &jean_pierre));
        // Another first given name, or birth name: no.
        assert!(!agrees(&Pivot { given_name: "Louis".into(), ..pivot() }, &opened("1850752121003")));
        assert!(!agrees(&Pivot { family_name: "Martins".into(), ..pivot() }, &opened("1850752121003")));
    }

    #[test]
    fn a_person_born_abroad_is_matched_on_the_country_code() {
        let abroad = Pivot { birthplace: None, birthcountry: "99134".into(), ..pivot() };
        assert!(agrees(&abroad, &opened("1850799134003")));
        assert!(!agrees(&abroad, &opened("1850799135003")));
    }
}

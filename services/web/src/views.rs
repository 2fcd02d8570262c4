//! What the pages show, in plain French, made from the service layer's answers: codes become
//! labels, instants become dates, each withheld section gets its reason in words.

use chrono::{DateTime, NaiveDate};
use passerelle_api::policy::{Purpose, Role};
use serde_json::Value;

pub fn purpose_label(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Orientation => "Orientation",
        Purpose::Accompagnement => "Accompagnement",
        Purpose::InstructionRsa => "Instruction du RSA",
    }
}

pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::ChargeOrientation => "Chargé(e) d’orientation",
        Role::GestionnaireRsa => "Gestionnaire RSA",
        Role::AgentCaisse => "Agent de caisse (CAF/MSA)",
        Role::ConseillerFt => "Conseiller(ère) France Travail",
        Role::AgentStructure => "Agent d’une structure d’accompagnement",
        Role::Dpo => "Délégué(e) à la protection des données",
    }
}

fn section_title(code: &str) -> &'static str {
    match code {
        "identite" => "Identité",
        "droits_rsa" => "Droits RSA",
        "emploi" => "Emploi (France Travail)",
        "parcours" => "Parcours d’insertion",
        "engagements" => "Engagements (contrat, actions, rendez-vous, sanctions)",
        "diagnostic" => "Diagnostic socio-professionnel",
        _ => "Rubrique",
    }
}

pub fn family_label(family: &str) -> &'static str {
    match family {
        "allocataire" => "CAF / MSA",
        "demandeur_emploi" => "France Travail",
        "orientation" => "Département",
        "parcours" => "Parcours (département, France Travail, structures)",
        "identite" => "Identité",
        _ => "Autre source",
    }
}

pub fn right_state_label(code: &str) -> String {
    match code {
        "0" => "Demande en attente de décision du département".into(),
        "1" => "Droit refusé".into(),
        "2" => "Droit ouvert et versable".into(),
        "3" => "Droit ouvert et suspendu".into(),
        "4" => "Droit ouvert, versement suspendu".into(),
        "5" => "Droit clos".into(),
        "6" => "Droit clos sur mois antérieur".into(),
        other => format!("État {other}"),
    }
}

fn household_role_label(code: &str) -> String {
    match code {
        "DEM" => "Demandeur".into(),
        "CJT" => "Conjoint(e)".into(),
        "ENF" => "Enfant".into(),
        "AUT" => "Autre personne du foyer".into(),
        "RDO" => "Responsable du dossier".into(),
        other => other.into(),
    }
}

pub fn ft_label(code: &str) -> String {
    match code {
        "INSCRIT" => "Inscrit(e)".into(),
        "CESSATION" => "Inscription cessée".into(),
        "RADIATION" => "Radié(e)".into(),
        "SUIVI" => "Suivi".into(),
        "GUIDE" => "Guidé".into(),
        "RENFORCE" => "Renforcé".into(),
        "GLOBAL" => "Global".into(),
        other => other.into(),
    }
}

pub fn orientation_label(code: &str) -> String {
    match code {
        "DEMANDEE" => "Orientation demandée".into(),
        "DECIDEE" => "Orientation décidée".into(),
        "REFUSEE" => "Orientation refusée".into(),
        "PRO" => "Professionnelle".into(),
        "SOCIO_PRO" => "Socio-professionnelle".into(),
        "SOCIAL" => "Sociale".into(),
        other => other.into(),
    }
}

pub fn event_label(event_type: &str) -> String {
    match event_type {
        "rsa.demand_recorded" => "Demande de RSA enregistrée",
        "rsa.right_opened" => "Droit RSA ouvert",
        "rsa.right_suspended" => "Droit RSA suspendu",
        "rsa.right_closed" => "Droit RSA clos",
        "rsa.right_refused" => "Droit RSA refusé",
        "rsa.sdd_changed" => "Soumission aux droits et devoirs modifiée",
        "rsa.household_role_set" => "Rôle dans le foyer",
        "rsa.address_changed" => "Changement d’adresse",
        "ft.inscription" => "Inscription à France Travail",
        "ft.categorie_changed" => "Changement de catégorie",
        "ft.accompagnement_changed" => "Changement de modalité d’accompagnement",
        "ft.referent_assigned" => "Conseiller France Travail désigné",
        "ft.ppae_signed" => "PPAE signé",
        "ft.cessation" => "Cessation d’inscription",
        "ft.radiation" => "Radiation",
        "orientation.requested" => "Demande d’orientation",
        "orientation.decided" => "Décision d’orientation",
        "orientation.denied" => "Orientation refusée",
        "referent.assigned" => "Référent désigné",
        "referent.ended" => "Fin de l’accompagnement du référent",
        "contract.signed" => "Contrat signé",
        "contract.ended" => "Fin de contrat",
        "opposition.recorded" => "Opposition au partage enregistrée",
        "opposition.withdrawn" => "Opposition retirée",
        "consent.given" => "Consentement au partage du diagnostic",
        "consent.withdrawn" => "Consentement retiré",
        "parcours.diagnostic_recorded" => "Diagnostic socio-professionnel enregistré",
        "parcours.plan_set" => "Plan d’action du contrat d’engagement",
        "parcours.action_status_changed" => "Statut d’une action modifié",
        "parcours.activity_hours_declared" => "Heures d’activité déclarées",
        "parcours.rendez_vous_convoked" => "Convocation à un rendez-vous",
        "parcours.rendez_vous_honoured" => "Rendez-vous honoré",
        "parcours.rendez_vous_missed" => "Rendez-vous manqué",
        "parcours.sanction_decided" => "Suspension-remobilisation décidée",
        "parcours.sanction_lifted" => "Suspension-remobilisation levée",
        "retraction" => "Retrait d’un fait",
        other => return other.to_owned(),
    }
    .to_owned()
}

/// `12/07/2026` from an RFC 3339 instant or a `YYYY-MM-DD` date; the text itself otherwise.
pub fn date(value: &str) -> String {
    if let Ok(instant) = DateTime::parse_from_rfc3339(value) {
        return instant.with_timezone(&chrono_tz::Europe::Paris).format("%d/%m/%Y").to_string();
    }
    if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return day.format("%d/%m/%Y").to_string();
    }
    value.to_owned()
}

/// `12/07/2026 à 09:30`.
pub fn date_time(value: &str) -> String {
    match DateTime::parse_from_rfc3339(value) {
        Ok(instant) => instant.with_timezone(&chrono_tz::Europe::Paris).format("%d/%m/%Y à %H:%M").to_string(),
        Err(_) => date(value),
    }
}

/// A label and its value, one line of a section.
pub struct Line {
    pub label: &'static str,
    pub value: String,
}

pub struct SectionView {
    pub code: String,
    pub title: &'static str,
    pub lines: Vec<Line>,
    /// "CAF / MSA : à jour au 12/07/2026".
    pub freshness: Option<String>,
}

pub struct WithheldView {
    pub title: &'static str,
    pub reason: String,
}

pub struct OrientationStep {
    pub label: String,
    pub date: String,
    pub kind: String,
}

pub struct DossierView {
    pub person_id: String,
    pub redirected_from: Option<String>,
    pub moved_out_since: Option<String>,
    pub incomplete: bool,
    pub sections: Vec<SectionView>,
    pub withheld: Vec<WithheldView>,
    pub orientation_history: Vec<OrientationStep>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Bool(true) => Some("Oui".into()),
        Value::Bool(false) => Some("Non".into()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A commune as an agent reads it: its name from the INSEE list, then its code
/// ("Chaumont (52121)"); a former code names today's commune.
pub fn commune_label(code: &str) -> String {
    use passerelle_domain::territory::communes::{self, Kind};
    match communes::entry(code) {
        Some(entry) if entry.kind() == Kind::Former => {
            let today: Vec<String> = entry
                .today()
                .map(|today| {
                    communes::entry(today).map_or_else(|| today.to_owned(), |t| format!("{} ({today})", t.name()))
                })
                .collect();
            format!("ancienne commune {code}, aujourd'hui {}", today.join(" ou "))
        }
        Some(entry) => format!("{} ({code})", entry.name()),
        None => code.to_owned(),
    }
}

/// The theme of a situation, an objective or an action, in words.
fn theme_label(code: &str) -> String {
    match code {
        "LOGEMENT" => "Logement",
        "EMPLOI" => "Emploi",
        "FORMATION" => "Formation",
        "DIFFICULTE_ADMINISTRATIVE" => "Difficultés administratives",
        "DIFFICULTE_FINANCIERE" => "Difficultés financières",
        "MOBILITE" => "Mobilité",
        "SANTE" => "Santé",
        "CONTRAINTES_FAMILIALES" => "Contraintes familiales",
        "MAITRISE_LANGUE" => "Maîtrise de la langue",
        "NUMERIQUE" => "Numérique",
        other => return other.to_owned(),
    }
    .to_owned()
}

fn status_label(code: &str) -> String {
    match code {
        "PREVUE" => "prévue",
        "EN_COURS" => "en cours",
        "REALISEE" => "réalisée",
        "ABANDONNEE" => "abandonnée",
        "convoque" => "convoqué(e)",
        "honore" => "honoré",
        "manque_excuse" => "manqué, excusé",
        "manque_non_excuse" => "manqué, non excusé",
        other => return other.to_owned(),
    }
    .to_owned()
}

/// The diagnostic section's lines: consent, the professional side, each situation shown, and how
/// many sensitive ones the reader may not see.
pub(crate) fn diagnostic_lines(section: &Value) -> Vec<Line> {
    let mut lines = vec![line("Consentement au partage du diagnostic", text(&section["consentement_partage"]))];
    let diagnostic = &section["diagnostic"];
    if diagnostic.is_null() {
        lines.push(line("Diagnostic", Some("Aucun diagnostic reçu".into())));
        return lines;
    }
    lines.push(line("Diagnostic du", text(&diagnostic["date"]).map(|d| date(&d))));
    lines.push(line("Métier recherché (code ROME)", text(&diagnostic["metier_recherche_rome"])));
    lines.push(line("Niveau de qualification", text(&diagnostic["niveau_qualification"])));
    lines.push(line("Dernier emploi", text(&diagnostic["dernier_emploi"])));
    for situation in diagnostic["situations"].as_array().into_iter().flatten() {
        let theme = text(&situation["theme"]).map(|t| theme_label(&t)).unwrap_or_default();
        let label = text(&situation["libelle"]).unwrap_or_default();
        let sensitive = if situation["sensible"].as_bool() == Some(true) { " (donnée sensible)" } else { "" };
        lines.push(line("Situation", Some(format!("{theme} : {label}{sensitive}"))));
    }
    if let Some(masked) = diagnostic["situations_sensibles_masquees"].as_u64().filter(|n| *n > 0) {
        lines.push(line(
            "Situations sensibles non affichées",
            Some(format!("{masked} (santé, handicap : réservées au référent)")),
        ));
    }
    lines
}

/// The engagements section's lines: the plan, its actions, hours, rendez-vous and sanctions.
pub(crate) fn engagement_lines(section: &Value) -> Vec<Line> {
    let mut lines = Vec::new();
    let plan = &section["plan"];
    if section.get("plan").is_some() {
        if plan.is_null() {
            lines.push(line("Plan d’action", Some("Aucun plan reçu".into())));
        } else {
            lines.push(line("Contrat d’engagement signé le", text(&plan["signe_le"]).map(|d| date(&d))));
            let hours = text(&plan["heures_hebdomadaires"]).map(|h| match text(&plan["motif_heures"]) {
                Some(motif) => format!("{h} h par semaine (motif : {})", motif.to_lowercase().replace('_', " ")),
                None => format!("{h} h par semaine"),
            });
            lines.push(line("Durée d’activité hebdomadaire", hours));
            for objective in plan["objectifs"].as_array().into_iter().flatten() {
                let theme = text(&objective["theme"]).map(|t| theme_label(&t)).unwrap_or_default();
                lines.push(line(
                    "Objectif",
                    Some(format!("{theme} : {}", text(&objective["libelle"]).unwrap_or_default())),
                ));
            }
            for action in plan["actions"].as_array().into_iter().flatten() {
                let label = text(&action["libelle"]).unwrap_or_else(|| "(libellé illisible)".into());
                let status = text(&action["statut"]).map(|s| status_label(&s)).unwrap_or_default();
                lines.push(line("Action", Some(format!("{label} : {status}"))));
            }
        }
        let hours: Vec<String> = section["heures_declarees"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|month| {
                format!(
                    "{} : {} h",
                    text(&month["mois"]).unwrap_or_default(),
                    text(&month["heures"]).unwrap_or_default()
                )
            })
            .collect();
        if !hours.is_empty() {
            lines.push(line("Heures d’activité déclarées", Some(hours.join(", "))));
        }
        for rdv in section["rendez_vous"].as_array().into_iter().flatten() {
            let when = text(&rdv["date"]).map(|d| date(&d)).unwrap_or_else(|| "date inconnue".into());
            let status = text(&rdv["statut"]).map(|s| status_label(&s)).unwrap_or_default();
            lines.push(line("Rendez-vous", Some(format!("le {when} : {status}"))));
        }
    }
    for sanction in section["sanctions"].as_array().into_iter().flatten() {
        let share = text(&sanction["part_suspendue_pct"]).unwrap_or_default();
        let months = text(&sanction["duree_mois"]).unwrap_or_default();
        let start = text(&sanction["debut"]).map(|d| date(&d)).unwrap_or_default();
        let state = match (&sanction["levee"], sanction["en_cours"].as_bool()) {
            (Value::Object(lifted), _) => format!(
                "levée le {}{}",
                lifted.get("date").and_then(Value::as_str).map(date).unwrap_or_default(),
                if lifted.get("rappel").and_then(Value::as_bool) == Some(true) { ", avec rappel" } else { "" }
            ),
            (_, Some(true)) => "en cours".into(),
            _ => "terminée".into(),
        };
        let motif = text(&sanction["motif"]).map(|m| format!(" ; motif : {m}")).unwrap_or_default();
        lines.push(line(
            "Suspension-remobilisation",
            Some(format!("{share} % suspendus pendant {months} mois à partir du {start}, {state}{motif}")),
        ));
    }
    if section["sanctions"].as_array().is_some_and(Vec::is_empty) && section.get("plan").is_none() {
        lines.push(line("Suspension-remobilisation", Some("Aucune".into())));
    }
    if let Some(masked) = section["elements_sensibles_masques"].as_u64().filter(|n| *n > 0) {
        lines.push(line(
            "Éléments sensibles non affichés",
            Some(format!("{masked} (santé, handicap : réservés au référent)")),
        ));
    }
    lines
}

fn line(label: &'static str, value: Option<String>) -> Line {
    Line { label, value: value.unwrap_or_else(|| "Non renseigné".into()) }
}

impl DossierView {
    pub fn from_answer(answer: &Value, role: Role, purpose: Purpose) -> Self {
        let sections_value = &answer["sections"];
        let freshness = &answer["fraicheur"];
        let fresh = |family: &str| {
            freshness
                .get(family)
                .and_then(Value::as_str)
                .map(|at| format!("{} : à jour au {}", family_label(family), date(at)))
        };
        let mut sections = Vec::new();
        let mut orientation_history = Vec::new();
        for code in ["identite", "droits_rsa", "emploi", "parcours", "engagements", "diagnostic"] {
            let Some(section) = sections_value.get(code) else { continue };
            let get = |key: &str| text(&section[key]);
            let (lines, fresh_line) = match code {
                "identite" => (
                    vec![
                        line("Nom", get("nom")),
                        line("Prénoms", get("prenoms")),
                        line("Date de naissance", get("date_naissance").map(|d| date(&d))),
                        line("NIR (masqué)", get("nir_masque")),
                        line("Commune de résidence", get("commune").map(|code| commune_label(&code))),
                        line("Territoire", get("territoire")),
                    ],
                    None,
                ),
                "droits_rsa" => {
                    let mut lines = vec![line("État du droit", get("etat_droit").map(|c| right_state_label(&c)))];
                    if section.get("etat_droit_depuis").is_some() {
                        lines.push(line("Depuis le", get("etat_droit_depuis").map(|d| date(&d))));
                        lines.push(line("Motif", get("motif")));
                    }
                    lines.push(line("Soumis(e) aux droits et devoirs", get("soumis_droits_devoirs")));
                    if section.get("sdd_depuis").is_some() {
                        lines.push(line("Soumis(e) depuis le", get("sdd_depuis").map(|d| date(&d))));
                        lines.push(line("Rôle dans le foyer", get("role_foyer").map(|c| household_role_label(&c))));
                    }
                    (lines, fresh("allocataire"))
                }
                "emploi" => (
                    vec![
                        line("Inscription", get("statut").map(|c| ft_label(&c))),
                        line("Depuis le", get("statut_depuis").map(|d| date(&d))),
                        line("Catégorie", get("categorie")),
                        line("Modalité d’accompagnement", get("accompagnement").map(|c| ft_label(&c))),
                    ],
                    fresh("demandeur_emploi"),
                ),
                "parcours" => {
                    let orientation = &section["orientation"];
                    let referent = &section["referent"];
                    let contract = &section["contrat"];
                    for step in section["historique_orientation"].as_array().into_iter().flatten() {
                        orientation_history.push(OrientationStep {
                            label: step["evenement"].as_str().map(event_label).unwrap_or_default(),
                            date: step["date"].as_str().map(date).unwrap_or_default(),
                            kind: step["type"].as_str().map(orientation_label).unwrap_or_else(|| "—".into()),
                        });
                    }
                    (
                        vec![
                            line("Orientation", text(&orientation["statut"]).map(|c| orientation_label(&c))),
                            line("Type d’orientation", text(&orientation["type"]).map(|c| orientation_label(&c))),
                            line("Décidée le", text(&orientation["decidee_le"]).map(|d| date(&d))),
                            line("Structure (SIRET)", text(&orientation["structure_siret"])),
                            line(
                                "Référent",
                                text(&referent["uid"]).map(|uid| match text(&referent["siret"]) {
                                    Some(siret) => format!("{uid} (structure {siret})"),
                                    None => uid,
                                }),
                            ),
                            line("Référent depuis le", text(&referent["depuis"]).map(|d| date(&d))),
                            line(
                                "Contrat",
                                text(&contract["type"]).map(|kind| {
                                    let start = text(&contract["debut"]).map(|d| date(&d));
                                    let end = text(&contract["fin"]).map(|d| date(&d));
                                    match (start, end) {
                                        (Some(start), Some(end)) => format!("{kind}, du {start} au {end}"),
                                        (Some(start), None) => format!("{kind}, depuis le {start}"),
                                        _ => kind,
                                    }
                                }),
                            ),
                            line("Opposition au partage", get("opposition")),
                        ],
                        fresh("orientation"),
                    )
                }
                "engagements" => (engagement_lines(section), fresh("parcours")),
                _ => (diagnostic_lines(section), None),
            };
            sections.push(SectionView { code: code.into(), title: section_title(code), lines, freshness: fresh_line });
        }
        let moved_out_since = answer
            .get("demenagement")
            .map(|moved| moved["depuis"].as_str().map(date).unwrap_or_else(|| "une date inconnue".into()));
        let withheld = answer["sections_masquees"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let code = item["section"].as_str().unwrap_or_default();
                let motif = item["motif"].as_str().unwrap_or_default();
                WithheldView {
                    title: section_title(code),
                    reason: withheld_reason(motif, role, purpose, moved_out_since.as_deref()),
                }
            })
            .collect();
        Self {
            person_id: answer["person_id"].as_str().unwrap_or_default().to_owned(),
            redirected_from: answer["redirige_depuis"].as_str().map(str::to_owned),
            moved_out_since,
            incomplete: answer["incomplet"].as_bool().unwrap_or(false),
            sections,
            withheld,
            orientation_history,
        }
    }
}

/// Why a section is not shown, in the words of the law.
pub fn withheld_reason(motif: &str, role: Role, purpose: Purpose, moved_since: Option<&str>) -> String {
    match motif {
        "opposition" => "La personne s’est opposée au partage des données de son parcours : elles restent \
                         auprès de l’institution qui les a produites (les données d’instruction du RSA restent partagées)."
            .into(),
        "consentement" => "Le diagnostic n’est partagé au-delà du référent qu’avec le consentement de la personne, \
                           qui ne l’a pas donné."
            .into(),
        "role" => format!("Votre rôle ({}) n’a pas à connaître cette rubrique.", role_label(role).to_lowercase()),
        "motif_acces" => format!(
            "Le motif d’accès choisi ({}) ne justifie pas la consultation de cette rubrique.",
            purpose_label(purpose).to_lowercase()
        ),
        "demenagement" => format!(
            "La personne a quitté votre territoire (depuis le {}) : seule cette information vous est communiquée.",
            moved_since.unwrap_or("date inconnue")
        ),
        other => format!("Rubrique non communiquée ({other})."),
    }
}

//! The pages every site of the State must have: accessibility, legal notice, personal data.

use super::*;

#[derive(Template)]
#[template(path = "statique.html")]
struct StaticPage {
    layout: Layout,
    which: &'static str,
}

async fn static_page(console: &Console, session: &Session, title: &str, which: &'static str) -> Response {
    let layout = anonymous_layout(console, session, title).await;
    let layout = with_agent(console, session, layout).await.crumbs(&[(title, None)]);
    render(&StaticPage { layout, which })
}

pub(super) async fn accessibility(State(console): State<Arc<Console>>, session: Session) -> Response {
    static_page(&console, &session, "Accessibilité", "accessibilite").await
}

pub(super) async fn legal_notice(State(console): State<Arc<Console>>, session: Session) -> Response {
    static_page(&console, &session, "Mentions légales", "mentions").await
}

pub(super) async fn privacy(State(console): State<Arc<Console>>, session: Session) -> Response {
    static_page(&console, &session, "Données personnelles", "donnees").await
}

pub(super) async fn unknown_page(State(console): State<Arc<Console>>, session: Session) -> Response {
    error_page(
        &console,
        &session,
        StatusCode::NOT_FOUND,
        "Page introuvable",
        "Cette page n’existe pas. Vérifiez l’adresse, ou repartez de l’accueil.".into(),
        Some(("/console", "Retour à l’accueil")),
    )
    .await
}

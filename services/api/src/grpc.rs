//! The gRPC face of the API (`proto/passerelle/dossier/v1/dossier.proto`): the same operations
//! as REST, over the same service layer, so the same policy decides and the same journal keeps.

use std::sync::Arc;

use serde_json::Value;
use tonic::{Request, Response, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::service::{Api, Caller, Failure, SearchRequest};

pub mod proto {
    tonic::include_proto!("passerelle.dossier.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("passerelle_dossier_descriptor");
}

use proto::{
    DossierReply, DossierRequest, HistoriqueReply, HistoriqueRequest, RechercheReply, RechercheRequest, Resultat,
    SectionMasquee, dossier_service_server::DossierService,
};

pub struct DossierGrpc {
    api: Arc<Api>,
}

impl DossierGrpc {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }

    async fn caller<T>(&self, request: &Request<T>, request_id: Uuid, action: &'static str) -> Result<Caller, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        self.api
            .authenticate(
                request_id,
                action,
                crate::journal::Channel::Grpc,
                authorization,
                request.remote_addr().map(|a| a.ip()),
            )
            .await
            .map_err(status)
    }
}

fn status(failure: Failure) -> Status {
    match failure {
        Failure::Unauthenticated(rejected) => Status::unauthenticated(rejected.to_string()),
        Failure::NotHabilitated(_) => Status::permission_denied(failure.to_string()),
        Failure::BadRequest { parameter, reason } => {
            // The purpose travels in the `motif` field here, not in a header.
            let parameter = if parameter == "X-Motif-Acces" { "motif" } else { parameter };
            Status::with_error_details(
                tonic::Code::InvalidArgument,
                format!("{parameter}: {reason}"),
                ErrorDetails::with_bad_request_violation(parameter, reason),
            )
        }
        Failure::NotFound => Status::not_found(failure.to_string()),
        Failure::RateLimited(_) => Status::resource_exhausted(failure.to_string()),
        Failure::Forbidden(motif) => Status::permission_denied(motif),
        Failure::Unavailable(detail) => {
            tracing::warn!(error = %detail, "API request not served: the database is unavailable");
            Status::unavailable("the hub's database is unavailable; retry in a few seconds")
        }
        Failure::Internal(detail) => {
            tracing::error!(error = %detail, "API request failed");
            Status::internal("internal error; the request id identifies it in the hub's logs")
        }
    }
}

fn with_request_id<T>(reply: T, request_id: Uuid) -> Response<T> {
    let mut response = Response::new(reply);
    if let Ok(value) = MetadataValue::try_from(request_id.to_string()) {
        response.metadata_mut().insert("x-request-id", value);
    }
    response
}

/// JSON to protobuf's Struct value.
fn to_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue { values: items.iter().map(to_value).collect() }),
        Value::Object(_) => Kind::StructValue(to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(value: &Value) -> prost_types::Struct {
    prost_types::Struct {
        fields: value
            .as_object()
            .map(|map| map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
            .unwrap_or_default(),
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

#[tonic::async_trait]
impl DossierService for DossierGrpc {
    async fn rechercher_personnes(
        &self,
        request: Request<RechercheRequest>,
    ) -> Result<Response<RechercheReply>, Status> {
        let request_id = Uuid::now_v7();
        let caller = self.caller(&request, request_id, "recherche").await?;
        let body = request.into_inner();
        let search = SearchRequest {
            motif: Some(body.motif),
            nir: body.nir,
            nom: body.nom,
            date_naissance: body.date_naissance,
            matricule_caf: body.matricule_caf,
            organisme: body.organisme,
            id_france_travail: body.id_france_travail,
            id_departement: body.id_departement,
            departement: body.departement,
        };
        let found = self.api.search(&caller, request_id, &search).await.map_err(status)?;
        let resultats = found["resultats"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| Resultat {
                        person_id: text(&item["person_id"]).unwrap_or_default(),
                        demenage: item["demenage"].as_bool().unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(with_request_id(RechercheReply { resultats }, request_id))
    }

    async fn lire_dossier(&self, request: Request<DossierRequest>) -> Result<Response<DossierReply>, Status> {
        let request_id = Uuid::now_v7();
        let caller = self.caller(&request, request_id, "dossier").await?;
        let body = request.into_inner();
        let motif = Some(body.motif.as_str()).filter(|m| !m.is_empty());
        let dossier = self.api.dossier(&caller, request_id, &body.person_id, motif).await.map_err(status)?;
        let reply = DossierReply {
            person_id: text(&dossier["person_id"]).unwrap_or_default(),
            sections: Some(to_struct(&dossier["sections"])),
            sections_masquees: dossier["sections_masquees"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|item| SectionMasquee {
                            section: text(&item["section"]).unwrap_or_default(),
                            motif: text(&item["motif"]).unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            redirige_depuis: text(&dossier["redirige_depuis"]),
            demenagement_depuis: text(&dossier["demenagement"]["depuis"]),
            incomplet: dossier["incomplet"].as_bool().unwrap_or_default(),
        };
        Ok(with_request_id(reply, request_id))
    }

    async fn lire_historique(&self, request: Request<HistoriqueRequest>) -> Result<Response<HistoriqueReply>, Status> {
        let request_id = Uuid::now_v7();
        let caller = self.caller(&request, request_id, "historique").await?;
        let body = request.into_inner();
        let motif = Some(body.motif.as_str()).filter(|m| !m.is_empty());
        let page = crate::service::PageQuery { limite: body.limite.map(|l| l.to_string()), curseur: body.curseur };
        let timeline = self.api.timeline(&caller, request_id, &body.person_id, motif, &page).await.map_err(status)?;
        let reply = HistoriqueReply {
            person_id: text(&timeline["person_id"]).unwrap_or_default(),
            evenements: timeline["evenements"]
                .as_array()
                .map(|items| items.iter().map(to_struct).collect())
                .unwrap_or_default(),
            suivant: text(&timeline["suivant"]),
        };
        Ok(with_request_id(reply, request_id))
    }
}

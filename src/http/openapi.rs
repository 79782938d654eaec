//! `GET /openapi.json` and `GET /docs/` (Swagger UI, assets vendored into the
//! binary). The document lists the paths; every schema in it is derived from the
//! wire types the handlers themselves take and return.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorItem};
use super::events::{EventOut, EventsPage};
use super::publish::{Accepted, EventIn, EventsWrapper, PublishBody, PublishResponse};
use super::status::{Health, HealthBody, StatsBody};
use crate::ack::AckMode;
use crate::stats::{DedupStats, WriterStats};

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(
        title = "event-aggregator",
        description = "Durable, deduplicating event ingestion. A 200 from POST /publish means every \
                       event of the request (or its earlier copy) is on disk; 503 and 429 carry \
                       Retry-After and mean nothing of the request was stored."
    ),
    paths(
        super::publish::publish,
        super::events::list,
        super::status::stats,
        super::status::health,
        super::status::metrics,
        super::status::dashboard,
    ),
    components(schemas(
        EventIn,
        EventsWrapper,
        PublishBody,
        PublishResponse,
        Accepted,
        ErrorBody,
        ErrorItem,
        EventOut,
        EventsPage,
        StatsBody,
        WriterStats,
        DedupStats,
        HealthBody,
        Health,
        AckMode
    ))
)]
pub struct ApiDoc;

/// Declares the optional bearer token: on the routes `auth::protects`, either the
/// token (when the server has one configured) or nothing (when it has not).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", scheme);
        for (path, item) in doc.paths.paths.iter_mut() {
            if !super::auth::protects(path) {
                continue;
            }
            let operations = [&mut item.get, &mut item.post].into_iter().flatten();
            for operation in operations {
                let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
                operation.security = Some(vec![bearer, SecurityRequirement::default()]);
            }
        }
    }
}

/// The spec served at `/openapi.json` (by the Swagger UI router).
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

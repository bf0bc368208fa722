//! The OpenAPI 3.1 description of api-server, generated from the route
//! table itself ([`crate::routes::routes`]), so a route cannot exist without
//! being described: its method and path, who may call it (session cookie,
//! API or service token, device token, anyone), the scope a token needs
//! (`x-edgelink-scope`), its per-address limit, and the error answers the
//! gate can give, all with the one error body.

use serde_json::{Map, Value, json};

use crate::principal::{Access, Need};
use crate::routes::Route;

/// Every status the gate and the handlers answer with the error body, by
/// who may call a route.
fn error_statuses(route: &Route) -> Vec<&'static str> {
    let mut v = vec!["400", "404", "405", "413", "415", "422", "500", "503"];
    match route.access {
        Access::Public => {}
        Access::User | Access::Device | Access::UserOrDevice => v.extend(["401", "403"]),
    }
    v.push("429");
    if route.path.contains("/http") {
        v.extend(["502", "504"]);
    }
    v
}

fn operation(route: &Route, method: &str) -> Value {
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        json!(format!("{method}{}", route.path.replace(['/', '{', '}', '*', '.', '-'], "_"))),
    );
    let security = match route.access {
        Access::Public => json!([]),
        Access::User => match route.need {
            Need::BrowserSession => json!([{ "session": [] }]),
            _ => json!([{ "session": [] }, { "bearer": [] }]),
        },
        Access::Device => json!([{ "device": [] }]),
        Access::UserOrDevice => json!([{ "session": [] }, { "bearer": [] }, { "device": [] }]),
    };
    op.insert("security".into(), security);
    let scope = match route.need {
        Need::Scope(s) => json!(s.as_str()),
        Need::ByMethod(r, w) => json!({ "safe_methods": r.as_str(), "other_methods": w.as_str() }),
        Need::BrowserSession => json!("browser session only"),
        Need::Nothing => Value::Null,
    };
    if !scope.is_null() {
        op.insert("x-edgelink-scope".into(), scope);
    }
    if let Some(limit) = route.limit {
        op.insert("x-edgelink-rate-limit".into(), json!(format!("per client address: {}", limit.name())));
    }
    let params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({ "name": name.trim_start_matches('*'), "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), json!(params));
    }
    if matches!(method, "post" | "put" | "patch") {
        op.insert(
            "requestBody".into(),
            json!({ "required": false, "content": { "application/json": { "schema": {} }, "*/*": { "schema": {} } } }),
        );
    }
    let mut responses = Map::new();
    responses.insert(
        "default".into(),
        // Successes vary (JSON, HTML pages, redirects, a device's own
        // answer): described in docs/api.md, not here.
        json!({ "description": "success or redirect: see docs/api.md" }),
    );
    for status in error_statuses(route) {
        if route.path == "/socket.io/" && status == "400" {
            // Engine.IO answers its own protocol errors in its own form.
            responses.insert(
                status.into(),
                json!({ "description": "Engine.IO protocol error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/EngineIoError" } } } }),
            );
            continue;
        }
        responses.insert(
            status.into(),
            json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The OpenAPI document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in routes {
        let path = r.path.replace("{*", "{");
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        let methods: Vec<String> = if r.method.as_str() == "*" {
            ["get", "head", "options", "post", "put", "patch", "delete"].map(String::from).to_vec()
        } else {
            vec![r.method.as_str().to_ascii_lowercase()]
        };
        for m in methods {
            entry[m.as_str()] = operation(r, &m);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "edgelink api-server", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Generated from the route table; prose in docs/api.md." },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": { "type": "apiKey", "in": "cookie", "name": "__Host-edgelink_session" },
                "bearer": { "type": "http", "scheme": "bearer", "description": "an API token (elk_…) or a machine client's access token" },
                "device": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "a device access token" }
            },
            "schemas": {
                "ErrorBody": {
                    "type": "object",
                    "required": ["code", "error", "message", "timestamp", "path"],
                    "properties": {
                        "code": { "type": "integer" }, "error": { "type": "string" }, "message": { "type": "string" },
                        "timestamp": { "type": "string" }, "path": { "type": "string" },
                        "retry_after": { "type": "integer" }
                    }
                },
                "EngineIoError": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": ["integer", "string"] }, "message": { "type": "string" }
                    }
                }
            }
        }
    })
}

/// `GET /api/openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document(&crate::routes::routes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_table_is_described() {
        let routes = crate::routes::routes();
        let doc = document(&routes);
        for r in &routes {
            let path = r.path.replace("{*", "{");
            let method =
                if r.method.as_str() == "*" { "get".to_owned() } else { r.method.as_str().to_ascii_lowercase() };
            let op = &doc["paths"][path.as_str()][method.as_str()];
            assert!(op.is_object(), "{} {} is missing from the OpenAPI document", r.method, r.path);
            if let Need::Scope(s) = r.need {
                assert_eq!(op["x-edgelink-scope"], s.as_str(), "{} {}", r.method, r.path);
            }
        }
        assert_eq!(doc["paths"]["/api/v1/tokens"]["post"]["x-edgelink-scope"], "token:manage");
    }
}

//! Following a cross-cluster switch. A finished cross-cluster rollover leaves the source
//! write-blocked and names the target cluster in the source index's mapping `_meta` (the
//! [switch marker](indexferry_schemas::switch)), written after the swap, once nothing
//! replays any more. A proxy configured with that migration and cluster
//! (`--follow-migration`, `--follow-url`) sends every
//! request there from then on, reads included, without a restart:
//! - a write refused by a block asks the source for the marker (at most every
//!   [`BLOCKED_EVERY`]), and is sent again to the target once it is there;
//! - any request asks at most every [`LOOK_EVERY`], so that a proxy that only reads, or one
//!   started after the switch, goes there too (its first request does).
//!
//! The whole proxy follows, not one alias: one proxy fronts one application's cluster.

use super::{credentials, http_client, Proxy, Upstream};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use indexferry_common::es::redact_url;
use indexferry_schemas::switch::{same_url, SwitchMarker, KEY};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often, at most, writes refused by a block read the marker: during a rollover's
/// pause every write in flight is held at once, and one read serves them all.
const BLOCKED_EVERY: Duration = Duration::from_millis(100);

/// How often, at most, any request reads it.
const LOOK_EVERY: Duration = Duration::from_secs(5);

impl Proxy {
    /// Any request: reads the marker if it is time (never waiting for another reader).
    pub(super) async fn look_for_switch(&self, headers: &HeaderMap) {
        if self.cfg.follow.is_none() || self.upstream().followed {
            return;
        }
        let Ok(mut last) = self.marker_read.try_lock() else { return };
        if last.is_some_and(|at| at.elapsed() < LOOK_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.read_marker(headers).await;
    }

    /// A write refused by a block: true when requests go elsewhere now (switched by this
    /// read or by another request's).
    pub(super) async fn blocked_write_switched(&self, headers: &HeaderMap) -> bool {
        let before = self.upstream();
        if self.cfg.follow.is_none() || before.followed {
            return false;
        }
        let mut last = self.marker_read.lock().await;
        if !Arc::ptr_eq(&before, &self.upstream()) {
            return true;
        }
        if last.is_none_or(|at| at.elapsed() >= BLOCKED_EVERY) {
            *last = Some(Instant::now());
            self.read_marker(headers).await;
        }
        !Arc::ptr_eq(&before, &self.upstream())
    }

    /// Asks the source for switch markers (with the client's credentials) and follows one
    /// that names the configured target.
    async fn read_marker(&self, headers: &HeaderMap) {
        let Some(follow) = &self.cfg.follow else { return };
        let path = format!("/_mapping?filter_path=*.mappings._meta.{KEY}");
        let answer = match self.send(&Method::GET, &path, &credentials(headers), Bytes::new()).await {
            Ok(a) if a.status.is_success() => a,
            Ok(a) => {
                tracing::debug!(status = %a.status, "cannot read the switch markers");
                return;
            }
            Err(_) => return,
        };
        let Ok(mappings) = serde_json::from_slice::<Value>(&answer.body) else { return };
        let target = redact_url(&follow.url);
        let marker = mappings.as_object().into_iter().flatten().find_map(|(_, m)| {
            serde_json::from_value::<SwitchMarker>(m["mappings"]["_meta"][KEY].clone()).ok().filter(|marker| {
                marker.migration == follow.migration && marker.cluster.iter().any(|u| same_url(u, &target))
            })
        });
        let Some(marker) = marker else { return };
        let client = match http_client(follow.ca_file.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the target the switch names");
                return;
            }
        };
        let authorization = follow.authorization.as_deref().and_then(|a| HeaderValue::from_str(a).ok());
        let elastic_compat = self.cfg.elastic_product != super::ElasticProduct::Never;
        let to = Upstream { url: follow.url.clone(), client, authorization, followed: true, elastic_compat };
        tracing::warn!(
            migration = %marker.migration, alias = %marker.alias, to = %target,
            "the migration switched to another cluster: every request goes there from now on"
        );
        *self.upstream.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(to);
    }
}

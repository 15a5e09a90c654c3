//! `indexferry-proxy`: put in front of the source cluster, it forwards every request and
//! publishes the change event of every write the cluster acknowledged (see the library's
//! `proxy` module).

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use indexferry_producer::proxy::{ElasticProduct, FollowConfig, Proxy, ProxyConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "indexferry-proxy",
    version,
    about = "An HTTP proxy in front of the source cluster that publishes a change event for every write it acknowledged",
    long_about = "Point the application at this proxy instead of the source cluster. Every request goes on to the \
                  cluster; every document write the cluster acknowledged (_doc, _create, _update, deletes, _bulk) is \
                  read back and its change event published to Kafka (acks=all) before the application gets its \
                  answer. _update_by_query and _delete_by_query are run by the proxy (a scroll, then conditional bulks) so \
                  that every document they change is published. Writes are refused with 503 before they reach the \
                  cluster while Kafka cannot take events. _reindex and typed document APIs are refused (501)."
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "INDEXFERRY_PROXY_LISTEN", default_value = "127.0.0.1:9280")]
    listen: SocketAddr,
    /// The source cluster's URL.
    #[arg(long, env = "INDEXFERRY_PROXY_UPSTREAM")]
    upstream: String,
    /// PEM file of the CA that signed the upstream's certificate.
    #[arg(long, env = "INDEXFERRY_PROXY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "INDEXFERRY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic the change events go to (the recipe's `kafka.topic`).
    #[arg(long, env = "INDEXFERRY_KAFKA_TOPIC")]
    topic: String,
    /// A librdkafka property for the producer, `key=value` (security.protocol, sasl.*, ...); repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// How long one event may take to be acknowledged.
    #[arg(long, env = "INDEXFERRY_PROXY_PUBLISH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    publish_timeout: Duration,
    /// How long a write refused by a write block (a rollover's pause) or a full queue is held
    /// and sent again. Keep it below the clients' request timeout (10 s in the Python clients).
    #[arg(long, env = "INDEXFERRY_PROXY_HOLD", default_value = "8s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The largest request body taken, in bytes (the cluster's http.max_content_length is 100mb).
    #[arg(long, env = "INDEXFERRY_PROXY_MAX_BODY", default_value_t = 100 * 1024 * 1024)]
    max_body: usize,
    /// A folder for the journal of writes in flight: a proxy killed between the cluster's
    /// answer and the publish leaves writes whose events may be missing, which the next start
    /// counts (`/_indexferry/stats`), lists there and publishes as gap notices for the
    /// migration's consumer (`status` shows them). Keep it on a persistent volume.
    #[arg(long, env = "INDEXFERRY_PROXY_JOURNAL")]
    journal: Option<PathBuf>,
    /// Listen with TLS: a PEM file of the certificate chain (with --tls-key).
    #[arg(long, env = "INDEXFERRY_PROXY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    #[arg(long, env = "INDEXFERRY_PROXY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// When to make OpenSearch acceptable to the `elasticsearch` clients (they refuse a
    /// server without `X-Elastic-Product: Elasticsearch`, and send media types OpenSearch
    /// refuses): never; once the proxy follows a cross-cluster switch; always.
    #[arg(long, env = "INDEXFERRY_PROXY_ELASTIC_PRODUCT", value_enum, default_value_t = ElasticProduct::Never)]
    elastic_product: ElasticProduct,
    /// This proxy's name in the gap notices it publishes (default: the host name, which is
    /// the pod's name on Kubernetes).
    #[arg(long, env = "INDEXFERRY_PROXY_NAME")]
    name: Option<String>,
    /// The target cluster of a cross-cluster migration, as the recipe's `[target] url` names
    /// it: once the source carries the switch marker naming it, every request goes there.
    #[arg(long, env = "INDEXFERRY_PROXY_FOLLOW_URL", requires = "follow_migration")]
    follow_url: Option<String>,
    /// The migration whose switch to that cluster is followed (its name in the recipe): the
    /// source may carry the markers of other migrations that left it.
    #[arg(long, env = "INDEXFERRY_PROXY_FOLLOW_MIGRATION", requires = "follow_url")]
    follow_migration: Option<String>,
    /// PEM file of the CA that signed the target's certificate.
    #[arg(long, env = "INDEXFERRY_PROXY_FOLLOW_CA_FILE", requires = "follow_url")]
    follow_ca_file: Option<PathBuf>,
    /// A user of the target cluster, whose credentials replace the client's there (the
    /// password from INDEXFERRY_PROXY_FOLLOW_PASSWORD). Without it or an API key, the
    /// client's own credentials go to the target too.
    #[arg(long, env = "INDEXFERRY_PROXY_FOLLOW_USERNAME", requires = "follow_url")]
    follow_username: Option<String>,
    #[arg(long, env = "INDEXFERRY_PROXY_FOLLOW_PASSWORD", hide_env_values = true, requires = "follow_username")]
    follow_password: Option<String>,
    /// An API key of the target cluster (base64 `id:key`), instead of a user.
    #[arg(long, env = "INDEXFERRY_PROXY_FOLLOW_API_KEY", hide_env_values = true, conflicts_with = "follow_username")]
    follow_api_key: Option<String>,
    /// Log lines on stderr as `text`, or as `json`.
    #[arg(long, env = "INDEXFERRY_LOG_FORMAT", default_value = "text")]
    log_format: indexferry_common::logging::Format,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    indexferry_common::logging::init(cli.log_format);
    if let Err(e) = run(cli).await {
        indexferry_common::logging::fatal(&format!("{e:#}"));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut kafka_properties = BTreeMap::new();
    for p in &cli.kafka_properties {
        let (k, v) = p.split_once('=').with_context(|| format!("--kafka-property {p:?}: expected key=value"))?;
        kafka_properties.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let cfg = ProxyConfig {
        listen: cli.listen,
        upstream: cli.upstream,
        ca_file: cli.ca_file,
        brokers: cli.brokers,
        kafka_properties,
        topic: cli.topic,
        publish_timeout: cli.publish_timeout,
        hold: cli.hold,
        max_body: cli.max_body,
        journal: cli.journal,
        tls: cli.tls_cert.zip(cli.tls_key),
        elastic_product: cli.elastic_product,
        name: cli
            .name
            .or_else(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()))
            .unwrap_or_else(|| format!("indexferry-proxy@{}", cli.listen)),
        follow: cli.follow_url.map(|url| FollowConfig {
            url,
            migration: cli.follow_migration.unwrap_or_default(),
            ca_file: cli.follow_ca_file,
            authorization: match (cli.follow_username, cli.follow_api_key) {
                (Some(user), _) => {
                    let pair = format!("{user}:{}", cli.follow_password.unwrap_or_default());
                    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
                }
                (None, Some(key)) => Some(format!("ApiKey {key}")),
                (None, None) => None,
            },
        }),
    };
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let (listen, upstream, topic) = (listener.local_addr()?, cfg.upstream.clone(), cfg.topic.clone());
    let tls = cfg.tls.is_some();
    if let Some(f) = &cfg.follow {
        let own = if f.authorization.is_some() { "its own credentials" } else { "the client's credentials" };
        tracing::info!(target_url = %indexferry_common::es::redact_url(&f.url), "after a cross-cluster switch to this cluster, requests go there with {own}");
    }
    let proxy = Proxy::new(cfg).await?;
    tracing::info!(%listen, tls, %upstream, %topic, "proxy listening");
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping: finishing the requests in flight");
        signalled.cancel();
    });
    proxy.serve(listener, stop).await
}

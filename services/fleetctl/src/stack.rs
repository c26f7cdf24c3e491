//! `fleetctl stack status`: proves each component answers, using the same client
//! libraries and endpoint variables as the services.

use std::time::Duration;

use anyhow::{Context, anyhow};
use fleet_runtime::Endpoints;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use sqlx::Connection;

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One component's health.
#[derive(Debug)]
pub struct ComponentStatus {
    pub component: &'static str,
    pub endpoint: String,
    pub result: anyhow::Result<String>,
}

/// Checks the three components concurrently.
pub async fn check(endpoints: &Endpoints) -> Vec<ComponentStatus> {
    let mqtt_config = endpoints.mqtt();
    let (mqtt, kafka, database) = tokio::join!(
        bounded(check_mqtt(&mqtt_config)),
        bounded(check_kafka(&endpoints.kafka_brokers)),
        bounded(check_database(&endpoints.database_url)),
    );
    vec![
        ComponentStatus {
            component: "mqtt",
            endpoint: endpoints.mqtt_url.clone(),
            result: mqtt,
        },
        ComponentStatus {
            component: "kafka",
            endpoint: endpoints.kafka_brokers.clone(),
            result: kafka,
        },
        ComponentStatus {
            component: "postgres",
            endpoint: fleet_runtime::redact_url(&endpoints.database_url),
            result: database,
        },
    ]
}

/// Prints one line per component; true when all are healthy.
pub async fn print_status(endpoints: &Endpoints) -> anyhow::Result<bool> {
    let statuses = check(endpoints).await;
    let mut healthy = true;
    for s in &statuses {
        match &s.result {
            Ok(detail) => println!("{:<9} ok      {}  {}", s.component, s.endpoint, detail),
            Err(e) => {
                healthy = false;
                println!("{:<9} FAILED  {}  {:#}", s.component, s.endpoint, e);
            }
        }
    }
    Ok(healthy)
}

async fn bounded(check: impl Future<Output = anyhow::Result<String>>) -> anyhow::Result<String> {
    tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .map_err(|_| anyhow!("no answer within {CHECK_TIMEOUT:?}"))?
}

/// Subscribes to a fresh probe topic (`fleet/probe/...`, outside every gateway's
/// namespace; the broker's ACL lets the operator identity use it), publishes to it at
/// QoS 1, and waits to receive it.
async fn check_mqtt(mqtt: &fleet_runtime::MqttConfig) -> anyhow::Result<String> {
    let nonce = format!("{}-{}", std::process::id(), chrono_free_nonce());
    let topic = format!("fleet/probe/{nonce}");
    let options = mqtt.options(
        &format!("fleetctl-check-{nonce}"),
        fleet_runtime::mqtt::OPERATOR_IDENTITY,
    )?;
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(&topic, QoS::AtLeastOnce).await?;
    loop {
        match events.poll().await.context("mqtt connection")? {
            Event::Incoming(Packet::SubAck(ack)) => {
                anyhow::ensure!(
                    !fleet_runtime::mqtt::suback_refused(&ack),
                    "the broker refused the subscription to {topic} (ACL)"
                );
                client
                    .publish(&topic, QoS::AtLeastOnce, false, b"ping".to_vec())
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == topic => {
                let _ = client.disconnect().await;
                return Ok("publish/subscribe round trip".into());
            }
            _ => {}
        }
    }
}

async fn check_kafka(brokers: &str) -> anyhow::Result<String> {
    let brokers = brokers.to_owned();
    let topics =
        tokio::task::spawn_blocking(move || fleet_kafka::topic_names(&brokers, CHECK_TIMEOUT))
            .await??;
    Ok(format!("metadata: {} topics", topics.len()))
}

async fn check_database(url: &str) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(format!("SELECT 1 (server {version})"))
}

fn chrono_free_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

//! Token auth on the HTTP/2 API as correct provider libraries use it, and as Apple refuses
//! it: `iat` types, expired and future tokens, a team's bundles, keys and certificates
//! minted into the certificate folder while the simulator runs, and the detail in words
//! behind every refusal (read from the hub's record of the rejection).
//!
//! Real TLS to a simulator on 127.0.0.1 port 0; time moves only through the test clock.

use std::sync::Arc;
use std::time::Duration;

use apns_sim::client::http2::{Http2Client, Http2Request, Http2Response};
use apns_sim::hub::{Event, Outcome};
use apns_sim::pki::{
    jwt, CertEnvironment, Pki, DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC, DEMO_TOPICS,
};
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use apns_sim::scenario::{self, Scenario};
use apns_sim::tls::ClientIdentity;
use serde_json::json;
use uuid::Uuid;

use crate::common::{
    self, alert, assert_silent, frame, in_an_hour, next_hub_event, next_id, next_notification,
    TestSim, OTHER_TEAM, OTHER_TEAM_KEY,
};

const APP: &str = DEFAULT_TOPIC;

/// The re-read interval of [`start_from_folder`].
const REREAD_INTERVAL: Duration = Duration::from_secs(3600);
const ALERT: &str = r#"{"aps":{"alert":"hi"}}"#;

fn push_to(token: &DeviceToken, topic: &str) -> Http2Request {
    Http2Request::push(&token.to_hex(), ALERT).header("apns-topic", topic)
}

/// Sends `request` and returns the answer with the detail the hub recorded for it (empty
/// for a success).
async fn send(
    t: &TestSim,
    client: &mut Http2Client,
    request: &Http2Request,
) -> (Http2Response, String) {
    let mut events = t.sim.hub().subscribe();
    let answer = client.send(request).await.expect("an answer");
    if answer.status == 200 {
        return (answer, String::new());
    }
    let id: Uuid = answer
        .apns_id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .expect("apns-id on errors");
    let event = next_hub_event(&mut events, |e| {
        matches!(e, Event::Notification { apns_id, outcome: Outcome::Rejected, .. } if *apns_id == id)
    })
    .await;
    let Event::Notification { detail, .. } = event else {
        unreachable!()
    };
    (answer, detail)
}

fn assert_refused(answer: &(Http2Response, String), status: u16, reason: &str, says: &str) {
    let (response, detail) = answer;
    assert_eq!(
        (response.status, response.reason.as_deref()),
        (status, Some(reason)),
        "{response} ({detail})"
    );
    assert!(
        detail.starts_with(reason) && detail.contains(says),
        "detail {detail:?} should say {says:?}"
    );
}

/// A token of `key_id` with `iat` as the given JSON value.
fn token_with_iat(t: &TestSim, key_id: &str, iat: serde_json::Value) -> String {
    let key = t.pki.auth_key(key_id).expect("key");
    let team = key.team_id.clone();
    jwt::sign_claims(key, &json!({ "iss": team, "iat": iat })).expect("sign")
}

#[tokio::test]
async fn iat_as_a_float_or_a_digit_string_is_accepted_and_other_types_say_why() {
    let t = common::start().await;
    let (mut phone, tokens) = t.device("iat-1", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let now = t.clock.now_secs();

    // Python's time.time() and digit strings, each on its own connection (a second new
    // token on one connection would be an update).
    for iat in [json!(now as f64 + 0.73), json!(now.to_string())] {
        let mut client = t.http2_token().await;
        let bearer = token_with_iat(&t, DEFAULT_KEY_ID, iat.clone());
        let (answer, _) = send(&t, &mut client, &push_to(&token, APP).bearer(&bearer)).await;
        assert_eq!(answer.status, 200, "iat {iat}: {answer}");
        next_notification(&mut phone).await;
    }

    let mut client = t.http2_token().await;
    for (iat, says) in [
        (json!(true), "iat is a boolean"),
        (json!({"s": now}), "iat is an object"),
        (json!([now]), "iat is an array"),
        (json!(null), "iat is null"),
        (json!(-(now as i64)), "iat is negative"),
        (json!("17 96"), "not decimal digits"),
    ] {
        let bearer = token_with_iat(&t, DEFAULT_KEY_ID, iat);
        let answer = send(&t, &mut client, &push_to(&token, APP).bearer(&bearer)).await;
        assert_refused(&answer, 403, "InvalidProviderToken", says);
    }

    // Milliseconds, as a number or a string: APNs sees a date far in the future.
    let ms = now * 1000 + 247;
    for iat in [json!(ms), json!(ms.to_string())] {
        let bearer = token_with_iat(&t, DEFAULT_KEY_ID, iat);
        let answer = send(&t, &mut client, &push_to(&token, APP).bearer(&bearer)).await;
        assert_refused(
            &answer,
            403,
            "ExpiredProviderToken",
            "looks like milliseconds; APNs expects seconds",
        );
        assert!(answer.1.contains(&ms.to_string()), "{}", answer.1);
    }
    t.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_replaced_at_once() {
    let t = common::start().await;
    let (_phone, tokens) = t.device("expired-1", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let mut client = t.http2_token().await;

    // A provider that first sends a token already 50 minutes old ...
    let old = t.jwt_at(DEFAULT_KEY_ID, t.clock.now_secs() - 50 * 60);
    let (answer, _) = send(&t, &mut client, &push_to(&token, APP).bearer(&old)).await;
    assert_eq!(answer.status, 200, "{answer}");
    // ... sees it expire 11 minutes later, within 20 minutes of its first use.
    t.clock.advance(Duration::from_secs(11 * 60));
    let answer = send(&t, &mut client, &push_to(&token, APP).bearer(&old)).await;
    assert_refused(
        &answer,
        403,
        "ExpiredProviderToken",
        "provider tokens expire after 3600 s",
    );
    // The replacement is accepted at once instead of 429 for the next nine minutes.
    let fresh = t.jwt(DEFAULT_KEY_ID);
    let (answer, _) = send(&t, &mut client, &push_to(&token, APP).bearer(&fresh)).await;
    assert_eq!(answer.status, 200, "{answer}");
    // The 20-minute rule still holds for a valid current token.
    let another = t.jwt_at(DEFAULT_KEY_ID, t.clock.now_secs() + 1);
    let answer = send(&t, &mut client, &push_to(&token, APP).bearer(&another)).await;
    assert_refused(
        &answer,
        429,
        "TooManyProviderTokenUpdates",
        "APNs allows one update per 1200 s",
    );
    t.stop().await;
}

#[tokio::test]
async fn a_future_iat_is_expired_beyond_an_hour_ahead() {
    let t = common::start().await;
    let (_phone, tokens) = t.device("future-1", Environment::Sandbox, &[APP]).await;
    let token = tokens[APP];
    let now = t.clock.now_secs();

    // A provider clock an hour and a bit fast: ExpiredProviderToken (node-apn#590).
    let mut client = t.http2_token().await;
    let ahead = t.jwt_at(DEFAULT_KEY_ID, now + 4000);
    let answer = send(&t, &mut client, &push_to(&token, APP).bearer(&ahead)).await;
    assert_refused(&answer, 403, "ExpiredProviderToken", "s in the future");
    assert!(answer.1.contains("at most 3600 s ahead"), "{}", answer.1);
    // Half an hour fast is within "no more than one hour from the current time".
    let near = t.jwt_at(DEFAULT_KEY_ID, now + 1800);
    let (answer, _) = send(&t, &mut client, &push_to(&token, APP).bearer(&near)).await;
    assert_eq!(answer.status, 200, "{answer}");
    t.stop().await;

    // The allowance is a setting.
    let t = common::start_with(|c| c.settings.max_iat_ahead = Duration::from_secs(60)).await;
    let (_phone, tokens) = t.device("future-2", Environment::Sandbox, &[APP]).await;
    let mut client = t.http2_token().await;
    let near = t.jwt_at(DEFAULT_KEY_ID, t.clock.now_secs() + 120);
    let answer = send(&t, &mut client, &push_to(&tokens[APP], APP).bearer(&near)).await;
    assert_refused(&answer, 403, "ExpiredProviderToken", "at most 60 s ahead");
    t.stop().await;
}

#[tokio::test]
async fn teams_own_their_bundles() {
    const THEIRS: &str = "com.other.team";
    let t = common::start_with(|c| {
        let mut pki = common::test_pki();
        pki.mint_provider(THEIRS, CertEnvironment::Universal, OTHER_TEAM)
            .expect("other team's certificate");
        c.pki = Arc::new(pki);
    })
    .await;
    let (_phone, tokens) = t
        .device(
            "teams-1",
            Environment::Sandbox,
            &[APP, THEIRS, "com.nobody"],
        )
        .await;

    // Another team's key may not push to the default team's app, nor the reverse.
    let mut client = t.http2_token().await;
    let other = t.jwt(OTHER_TEAM_KEY);
    let answer = send(&t, &mut client, &push_to(&tokens[APP], APP).bearer(&other)).await;
    assert_refused(
        &answer,
        400,
        "TopicDisallowed",
        "bundle com.example.app belongs to team SIMTEAM001, not to the token's team OTHERTEAM1",
    );
    let mine = t.jwt(DEFAULT_KEY_ID);
    let mut client = t.http2_token().await;
    let answer = send(
        &t,
        &mut client,
        &push_to(&tokens[THEIRS], THEIRS).bearer(&mine),
    )
    .await;
    assert_refused(
        &answer,
        400,
        "TopicDisallowed",
        "belongs to team OTHERTEAM1",
    );

    // Each team may push to its own bundles, and anyone to a bundle nobody owns.
    let (answer, _) = send(&t, &mut client, &push_to(&tokens[APP], APP).bearer(&mine)).await;
    assert_eq!(answer.status, 200, "{answer}");
    let mut theirs = t.http2_token().await;
    let (answer, _) = send(
        &t,
        &mut theirs,
        &push_to(&tokens[THEIRS], THEIRS).bearer(&other),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer}");
    let (answer, _) = send(
        &t,
        &mut theirs,
        &push_to(&tokens["com.nobody"], "com.nobody").bearer(&other),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer}");
    t.stop().await;
}

/// A scenario file's `[teams]` claims bundles for a team the PKI knows nothing of: a token
/// of another team is refused for them, the owner's token is served.
#[tokio::test]
async fn a_scenario_file_can_say_which_team_owns_a_bundle() {
    const CLAIMED: &str = "com.claimed.app";
    let fleet = Scenario::parse(&format!("[teams]\n{OTHER_TEAM} = ['{CLAIMED}']\n"))
        .expect("scenario with teams");
    let t = common::start_with(|c| c.bundle_owners = fleet.bundle_owners()).await;
    let (_phone, tokens) = t.device("teams-2", Environment::Sandbox, &[CLAIMED]).await;
    let mine = t.jwt(DEFAULT_KEY_ID);
    let mut client = t.http2_token().await;
    let answer = send(
        &t,
        &mut client,
        &push_to(&tokens[CLAIMED], CLAIMED).bearer(&mine),
    )
    .await;
    assert_refused(
        &answer,
        400,
        "TopicDisallowed",
        &format!("bundle {CLAIMED} belongs to team {OTHER_TEAM}"),
    );
    let other = t.jwt(OTHER_TEAM_KEY);
    let mut theirs = t.http2_token().await;
    let (answer, _) = send(
        &t,
        &mut theirs,
        &push_to(&tokens[CLAIMED], CLAIMED).bearer(&other),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer}");
    t.stop().await;
}

#[test]
fn the_demo_fleets_apps_belong_to_the_default_team() {
    let demo = Scenario::parse(scenario::DEMO).expect("demo scenario");
    for device in &demo.devices {
        for app in &device.apps {
            assert!(
                DEMO_TOPICS.contains(&app.app.as_str()),
                "{app} of {} is not in DEMO_TOPICS",
                device.serial
            );
        }
    }
    let owners = Pki::generate().unwrap().bundle_owners();
    for topic in DEMO_TOPICS {
        assert!(owners.contains(&(topic.to_string(), DEFAULT_TEAM_ID.to_owned())));
    }
}

/// A simulator serving from a certificate folder, as `apns-sim serve` does. The clock moves
/// with wall time too, so the re-read interval is set to an hour: no slow machine can make
/// the second re-read come due by itself.
async fn start_from_folder(dir: &std::path::Path) -> TestSim {
    common::start_with(|c| {
        c.pki.write(dir).expect("write the folder");
        c.pki_dir = Some(dir.to_owned());
        c.settings.pki_reread_interval = REREAD_INTERVAL;
    })
    .await
}

#[tokio::test]
async fn keys_and_certificates_minted_while_running_work_without_a_restart() {
    const LATE: &str = "com.example.late";
    let dir = tempfile::tempdir().expect("temp dir");
    let t = start_from_folder(dir.path()).await;
    let (mut phone, tokens) = t.device("late-1", Environment::Sandbox, &[APP, LATE]).await;

    // What `apns-sim certs auth-key` and `apns-sim certs provider` do while `serve` runs.
    let mut folder = Pki::load(dir.path()).expect("load");
    let key = folder
        .mint_auth_key(DEFAULT_TEAM_ID, Some("LATEKEY001".into()), vec![])
        .expect("key")
        .clone();
    let cert = folder
        .mint_provider(LATE, CertEnvironment::Universal, DEFAULT_TEAM_ID)
        .expect("provider")
        .clone();
    folder.write(dir.path()).expect("write");

    // The new key: the unknown kid makes the simulator re-read the folder.
    let mut client = t.http2_token().await;
    let bearer = jwt::sign(&key, t.clock.now_secs()).expect("sign");
    let (answer, _) = send(&t, &mut client, &push_to(&tokens[APP], APP).bearer(&bearer)).await;
    assert_eq!(answer.status, 200, "{answer}");
    next_notification(&mut phone).await;

    // A second key minted at once waits for the re-read interval (one second by default),
    // so a flood of unknown key ids cannot make every request read the disk.
    let second = folder
        .mint_auth_key(DEFAULT_TEAM_ID, Some("LATEKEY002".into()), vec![])
        .expect("key")
        .clone();
    folder.write(dir.path()).expect("write");
    let mut client = t.http2_token().await;
    let bearer = jwt::sign(&second, t.clock.now_secs()).expect("sign");
    let answer = send(&t, &mut client, &push_to(&tokens[APP], APP).bearer(&bearer)).await;
    assert_refused(
        &answer,
        403,
        "InvalidProviderToken",
        r#"unknown key id "LATEKEY002"; known: LATEKEY001, OTHERKEY01"#,
    );
    assert!(
        answer.1.contains("is re-read at most once per 3600s"),
        "{}",
        answer.1
    );
    t.clock.advance(REREAD_INTERVAL);
    let bearer = jwt::sign(&second, t.clock.now_secs()).expect("sign");
    let (answer, _) = send(&t, &mut client, &push_to(&tokens[APP], APP).bearer(&bearer)).await;
    assert_eq!(answer.status, 200, "{answer}");
    next_notification(&mut phone).await;

    // The new provider certificate chains to the CA the simulator trusts: HTTP/2 ...
    let identity = ClientIdentity::from_provider(&cert).expect("identity");
    let mut client = t
        .http2_as(
            t.client_tls(Some(identity.clone()), vec![b"h2".to_vec()]),
            "localhost",
        )
        .await;
    let (answer, _) = send(&t, &mut client, &push_to(&tokens[LATE], LATE)).await;
    assert_eq!(answer.status, 200, "{answer}");
    next_notification(&mut phone).await;
    // ... and the binary gateway.
    let mut gateway = t
        .gateway_as(t.client_tls(Some(identity), Vec::new()), "localhost")
        .await;
    let token = tokens[LATE];
    gateway
        .send(&frame(
            token.as_bytes(),
            &alert("late"),
            7,
            in_an_hour(&t.clock),
            10,
        ))
        .await
        .expect("send");
    assert_eq!(next_id(&mut phone).await, 7);
    assert_silent(&mut gateway).await;
    t.stop().await;
}

//! Users and API tokens through the engine: tokens authenticate by their secret and nothing
//! else, the store keeps only hashes, user names are checked, and both survive a reopen of a
//! durable store.

mod common;

use std::sync::Arc;

use ciclo_engine::auth::{SECRET_PREFIX, hash_secret};
use ciclo_engine::runtime::EngineError;
use ciclo_engine::store::sled::{SledOptions, SledStore};
use ciclo_engine::store::{Role, TokenRecord, UserRecord};
use common::{Harness, NowTs, ts};

fn user(name: &str, groups: &[&str]) -> UserRecord {
    UserRecord {
        name: name.into(),
        display_name: Some(format!("{name} Bianchi")),
        email: Some(format!("{name}@example.com")),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        password_hash: None,
        created_at: ts("2027-01-01T08:00:00Z"),
    }
}

#[test]
fn a_created_token_authenticates_with_its_role_and_user() {
    let h = Harness::new(&[]);
    h.engine.put_user(user("anna", &["sales"])).unwrap();
    let secret = h
        .engine
        .create_token(Role::Operator, Some("anna"), Some("ERP webhook"))
        .unwrap();
    assert!(secret.starts_with(SECRET_PREFIX), "{secret}");

    let token = h
        .engine
        .authenticate(&secret)
        .unwrap()
        .expect("authenticates");
    assert_eq!(
        token,
        TokenRecord {
            hash: hash_secret(&secret),
            role: Role::Operator,
            user: Some("anna".into()),
            label: Some("ERP webhook".into()),
            created_at: h.clock.now_ts(),
        }
    );

    // A token acting for nobody in particular.
    let service = h.engine.create_token(Role::Admin, None, None).unwrap();
    let token = h
        .engine
        .authenticate(&service)
        .unwrap()
        .expect("authenticates");
    assert_eq!(
        (token.role, token.user, token.label),
        (Role::Admin, None, None)
    );
    assert_ne!(service, secret);
}

#[test]
fn a_wrong_or_revoked_secret_does_not_authenticate() {
    let h = Harness::new(&[]);
    let secret = h.engine.create_token(Role::User, None, None).unwrap();
    let other = h.engine.create_token(Role::Analyst, None, None).unwrap();

    let mut altered = secret.clone();
    let last = altered.pop().expect("not empty");
    altered.push(if last == '0' { '1' } else { '0' });
    let random = secret.strip_prefix(SECRET_PREFIX).expect("prefix");
    for wrong in [
        "",
        "ciclo_",
        altered.as_str(),
        random,
        &secret.to_uppercase(),
        &hash_secret(&secret),
    ] {
        assert_eq!(h.engine.authenticate(wrong).unwrap(), None, "{wrong:?}");
    }

    assert!(h.engine.revoke_token(&hash_secret(&secret)).unwrap());
    assert_eq!(h.engine.authenticate(&secret).unwrap(), None);
    assert!(
        !h.engine.revoke_token(&hash_secret(&secret)).unwrap(),
        "revoking twice finds nothing the second time"
    );
    assert!(!h.engine.revoke_token("not-a-hash").unwrap());
    // Revoking one token leaves the others working.
    let token = h.engine.authenticate(&other).unwrap().expect("still valid");
    assert_eq!(token.role, Role::Analyst);
}

#[test]
fn the_store_never_contains_the_secret() {
    let h = Harness::new(&[]);
    h.engine.put_user(user("anna", &[])).unwrap();
    let secrets: Vec<String> = (0..5)
        .map(|_| {
            h.engine
                .create_token(Role::User, Some("anna"), Some("laptop"))
                .unwrap()
        })
        .collect();
    let stored = h.engine.store().tokens().unwrap();
    assert_eq!(stored.len(), secrets.len());
    for secret in &secrets {
        let random = secret.strip_prefix(SECRET_PREFIX).expect("prefix");
        for token in &stored {
            let record = format!("{token:?}");
            assert!(!record.contains(random), "{record} holds {secret}");
            assert_ne!(token.hash, *secret);
            assert_ne!(token.hash, random);
            assert_eq!(token.hash.len(), 64);
            assert!(
                token
                    .hash
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
        assert!(stored.iter().any(|t| t.hash == hash_secret(secret)));
    }
}

#[test]
fn users_round_trip_with_groups() {
    let h = Harness::new(&[]);
    assert_eq!(h.engine.users().unwrap(), vec![]);
    let mut anna = user("anna", &["sales", "managers"]);
    anna.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
    h.engine.put_user(user("carla", &[])).unwrap();
    h.engine.put_user(anna.clone()).unwrap();
    h.engine.put_user(user("bruno", &["support"])).unwrap();

    assert_eq!(h.engine.user("anna").unwrap(), Some(anna.clone()));
    assert_eq!(h.engine.user("dario").unwrap(), None);
    let names: Vec<String> = h
        .engine
        .users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, vec!["anna", "bruno", "carla"]);
    // The password hash stays out of debug output (and so out of logs).
    let shown = format!("{anna:?}");
    assert!(!shown.contains("argon2"), "{shown}");
    assert!(shown.contains("sales"), "{shown}");

    // Putting again replaces.
    anna.groups = vec!["support".into()];
    h.engine.put_user(anna.clone()).unwrap();
    assert_eq!(h.engine.user("anna").unwrap(), Some(anna));
    assert_eq!(h.engine.users().unwrap().len(), 3);

    assert!(h.engine.delete_user("bruno").unwrap());
    assert!(!h.engine.delete_user("bruno").unwrap());
    assert_eq!(h.engine.user("bruno").unwrap(), None);
    assert_eq!(h.engine.users().unwrap().len(), 2);
}

fn refusal(h: &Harness, record: UserRecord) -> String {
    match h.engine.put_user(record) {
        Err(error @ EngineError::BadUser(_)) => error.to_string(),
        other => panic!("expected BadUser, got {other:?}"),
    }
}

#[test]
fn a_bad_user_name_is_refused_with_a_clear_message() {
    let h = Harness::new(&[]);
    assert_eq!(
        refusal(&h, user("", &[])),
        "bad user: a user name cannot be empty"
    );
    assert_eq!(
        refusal(&h, user("anna rossi", &[])),
        "bad user: the user name \"anna rossi\" contains whitespace"
    );
    assert_eq!(
        refusal(&h, user("anna\u{0}", &[])),
        "bad user: the user name \"anna\\0\" contains a control character"
    );
    let long = refusal(&h, user(&"a".repeat(101), &[]));
    assert!(long.contains("at most 100 characters"), "{long}");
    assert!(long.contains("has 101"), "{long}");
    assert_eq!(
        refusal(&h, user("anna", &["sales", "key accounts"])),
        "bad user: user \"anna\": the group name \"key accounts\" contains whitespace"
    );
    // Nothing refused was stored; the longest and non-ASCII names are fine.
    assert_eq!(h.engine.users().unwrap(), vec![]);
    h.engine.put_user(user(&"a".repeat(100), &[])).unwrap();
    h.engine.put_user(user("anna.müller@acme", &[])).unwrap();
    assert_eq!(h.engine.users().unwrap().len(), 2);
}

#[test]
fn a_token_acts_only_for_an_existing_user_and_goes_with_them() {
    let h = Harness::new(&[]);
    match h.engine.create_token(Role::User, Some("ghost"), None) {
        Err(error @ EngineError::BadUser(_)) => {
            assert!(error.to_string().contains("no user \"ghost\""), "{error}")
        }
        other => panic!("expected BadUser, got {other:?}"),
    }
    assert_eq!(h.engine.store().tokens().unwrap(), vec![]);

    h.engine.put_user(user("anna", &[])).unwrap();
    h.engine.put_user(user("bruno", &[])).unwrap();
    let annas = h
        .engine
        .create_token(Role::User, Some("anna"), None)
        .unwrap();
    let brunos = h
        .engine
        .create_token(Role::User, Some("bruno"), None)
        .unwrap();
    let service = h.engine.create_token(Role::Operator, None, None).unwrap();

    assert!(h.engine.delete_user("anna").unwrap());
    assert_eq!(h.engine.authenticate(&annas).unwrap(), None);
    // A new user with the same name does not inherit the old tokens.
    h.engine.put_user(user("anna", &[])).unwrap();
    assert_eq!(h.engine.authenticate(&annas).unwrap(), None);
    assert!(h.engine.authenticate(&brunos).unwrap().is_some());
    assert!(h.engine.authenticate(&service).unwrap().is_some());
    assert_eq!(h.engine.store().tokens().unwrap().len(), 2);
}

#[test]
fn roles_parse_case_insensitively_and_name_the_valid_ones() {
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        assert_eq!(role.as_str().to_uppercase().parse::<Role>(), Ok(role));
        assert_eq!(role.to_string(), role.as_str());
    }
    assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
    let error = "root".parse::<Role>().unwrap_err().to_string();
    assert_eq!(
        error,
        "unknown role `root`: expected one of admin, analyst, operator, user, worker"
    );
    assert_eq!(
        serde_json::to_string(&Role::Operator).unwrap(),
        "\"operator\""
    );
}

#[test]
fn tokens_and_users_survive_reopening_a_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = SledStore::open(SledOptions::new(dir.path())).expect("open");
        Harness::with_store(Arc::new(store), &[])
    };
    let h = open();
    let anna = user("anna", &["sales", "managers"]);
    h.engine.put_user(anna.clone()).unwrap();
    let kept = h
        .engine
        .create_token(Role::Analyst, Some("anna"), Some("reports"))
        .unwrap();
    let revoked = h.engine.create_token(Role::Admin, None, None).unwrap();
    assert!(h.engine.revoke_token(&hash_secret(&revoked)).unwrap());
    let token = h
        .engine
        .authenticate(&kept)
        .unwrap()
        .expect("authenticates");
    drop(h);

    // No file of the data folder holds a secret, in any form the engine wrote it.
    let random = kept.strip_prefix(SECRET_PREFIX).expect("prefix");
    let raw: Vec<u8> = (0..random.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&random[i..i + 2], 16).expect("hex"))
        .collect();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for form in [random.as_bytes(), &raw[..]] {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form),
                "{} holds the secret",
                entry.display()
            );
        }
    }

    let h = open();
    assert_eq!(h.engine.user("anna").unwrap(), Some(anna));
    assert_eq!(h.engine.authenticate(&kept).unwrap(), Some(token));
    assert_eq!(h.engine.authenticate(&revoked).unwrap(), None);
    assert_eq!(h.engine.store().tokens().unwrap().len(), 1);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

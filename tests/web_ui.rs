//! The web page at `/ui/` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver, against the real provisioner
//! binary and the real control plane: sign in with the keyboard, create,
//! a countdown that counts down, download a kubeconfig the real kubectl
//! accepts, extend (the expiry moves), delete; no console errors and no CSP
//! violation in the browser's log; the security headers on the wire; a
//! phone-width window without sideways scrolling; API errors (401, a refused
//! create) shown as their problem+json title and detail. On failure a screenshot, the page source and the
//! browser log are saved under `target/test-logs/`.
//!
//! A missing chromium or chromedriver fails the test, saying how to install them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{Process, admin, cluster, eventually, http, repo_root, temp_file, unique};

const TOKEN: &str = "web-ui-token-0123456789abcdef";
/// An iPhone-sized window: the page must work at phone width.
const WIDTH: u32 = 390;
const HEIGHT: u32 = 844;

/// `name` on PATH or at `/usr/bin/name`, else a failing test that says how to get it.
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([Path::new("/usr/bin").join(name)])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: the browser test needs Debian's chromium and chromedriver; \
                 install them with `apt-get install chromium chromium-driver` (tests/run does \
                 it when run as root)"
            )
        })
}

/// The browser log (console messages, failed loads, CSP violations) since the
/// last read: chromedriver's `POST /session/{id}/se/log`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join("session/")?
            .join(&format!("{}/", session.unwrap_or_default()))?
            .join("se/log")
    }

    fn method_and_body(&self, _: &url::Url) -> (::http::Method, Option<String>) {
        (::http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

async fn browser_log(browser: &Browser) -> Vec<Value> {
    match browser.issue_cmd(BrowserLog).await.unwrap() {
        Value::Array(entries) => entries,
        other => panic!("browser log: {other}"),
    }
}

/// The provisioner (tenant `alice`, token [`TOKEN`]) on its own selector and
/// grant, chromedriver, and a Chromium session with a fresh profile.
struct Rig {
    provisioner: Option<Process>,
    addr: String,
    selector: String,
    grant: String,
    admin: Client,
    _chromedriver: Process,
    browser: Option<Browser>,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
    _token_file: tempfile::NamedTempFile,
}

impl Rig {
    async fn start() -> Rig {
        let chromium = program("chromium");
        let chromedriver = program("chromedriver");
        let admin = admin().await;
        let grant = unique("np-grant");
        support::create_cluster_role(
            &admin,
            &grant,
            vec![support::rule(&[""], &["configmaps"], &["create", "get", "list"])],
        )
        .await;
        let selector = format!("np-test.example.com/provisioner={}", unique("t"));
        let token_file = temp_file(&format!("alice {TOKEN}\n"));
        let provisioner = support::process::start_provisioner(
            "web-ui-provisioner",
            &[],
            &[
                ("NP_TOKEN_FILE", token_file.path().display().to_string()),
                ("NP_KUBECONFIG", cluster().kubeconfig.display().to_string()),
                ("NP_SELECTOR", selector.clone()),
                ("NP_CLUSTER_ROLE", grant.clone()),
            ],
            "/readyz",
        )
        .await;

        let port = support::free_port();
        let mut driver = Process::spawn("chromedriver", &chromedriver, &[format!("--port={port}")], &[]);
        let driver_addr = format!("127.0.0.1:{port}");
        support::wait_http_ok(&driver_addr, "/status", &mut driver).await;

        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // A phone's viewport (headless windows are at least 500 px wide).
                "mobileEmulation": {"deviceMetrics": {"width": WIDTH, "height": HEIGHT, "pixelRatio": 2}},
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://{driver_addr}/"))
            .await
            .unwrap_or_else(|e| panic!("start chromium through chromedriver: {e}\n{}", driver.log()));
        Rig {
            addr: provisioner.addr,
            provisioner: Some(provisioner.process),
            selector,
            grant,
            admin,
            _chromedriver: driver,
            browser: Some(browser),
            downloads,
            _profile: profile,
            _token_file: token_file,
        }
    }

    fn browser(&self) -> &Browser {
        self.browser.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Save a screenshot, the page source and the browser log for a failure.
    async fn save_artifacts(&self) -> PathBuf {
        let dir = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join(unique("web-ui"));
        let browser = self.browser();
        if let Ok(png) = browser.screenshot().await {
            let _ = std::fs::write(base.with_extension("png"), png);
        }
        if let Ok(html) = browser.source().await {
            let _ = std::fs::write(base.with_extension("html"), html);
        }
        if let Ok(log) = browser.issue_cmd(BrowserLog).await {
            let _ = std::fs::write(base.with_extension("browser.json"), log.to_string());
        }
        base
    }

    async fn cleanup(mut self) {
        if let Some(browser) = self.browser.take() {
            let _ = browser.close().await;
        }
        let api = Api::<Namespace>::all(self.admin.clone());
        for ns in api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .unwrap()
        {
            let _ = api.delete(&ns.name_any(), &DeleteParams::default()).await;
        }
        let _ = Api::<ClusterRole>::all(self.admin.clone())
            .delete(&self.grant, &DeleteParams::default())
            .await;
        if let Some(process) = self.provisioner.take() {
            let (status, log) = process.terminate().await;
            assert!(status.success(), "{status}\n{log}");
            assert!(!log.contains(TOKEN), "token in the provisioner log");
        }
    }
}

/// Seconds in a countdown as the page shows it: `9m 58s`, `1h 02m 03s`, `2d 3h 04m`.
fn countdown_seconds(text: &str) -> u64 {
    text.split_whitespace()
        .map(|part| {
            let (number, unit) = part.split_at(part.len() - 1);
            let number: u64 = number.parse().unwrap_or_else(|_| panic!("countdown {text:?}"));
            number
                * match unit {
                    "d" => 86400,
                    "h" => 3600,
                    "m" => 60,
                    "s" => 1,
                    _ => panic!("countdown {text:?}"),
                }
        })
        .sum()
}

async fn css(browser: &Browser, selector: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
}

async fn text(browser: &Browser, selector: &str) -> String {
    css(browser, selector).await.text().await.unwrap()
}

/// Wait (bounded) until the status line contains `part`; fail with the error box.
async fn status_says(browser: &Browser, part: &str) {
    let what = format!("the status line to say {part:?}");
    eventually(Duration::from_secs(60), &what, move || async move {
        let status = text(browser, "#status").await;
        let error = browser
            .execute("return document.getElementById('error').textContent", vec![])
            .await
            .unwrap();
        if status.contains(part) {
            Ok(())
        } else {
            Err(format!("status {status:?}, error {error}"))
        }
    })
    .await;
}

async fn script(browser: &Browser, js: &str) -> Value {
    browser.execute(js, vec![]).await.unwrap()
}

/// The expiry of `name` as the API tells alice, Unix seconds.
async fn api_expiry(rig: &Rig, name: &str) -> i64 {
    let answer = http(
        &rig.addr,
        "GET",
        &format!("/api/v1/namespaces/{name}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let at: jiff::Timestamp = answer.json()["expiresAt"].as_str().unwrap().parse().unwrap();
    at.as_second()
}

#[tokio::test]
async fn sign_in_create_count_down_download_extend_delete() {
    let rig = Rig::start().await;
    let outcome = std::panic::AssertUnwindSafe(journey(&rig)).catch_unwind().await;
    if let Err(panic) = outcome {
        let saved = rig.save_artifacts().await;
        eprintln!(
            "browser test failed; screenshot, page and browser log: {}.{{png,html,browser.json}}",
            saved.display()
        );
        rig.cleanup().await;
        std::panic::resume_unwind(panic);
    }
    rig.cleanup().await;
}

async fn journey(rig: &Rig) {
    let browser = rig.browser();

    // The headers on the wire.
    let page = http(&rig.addr, "GET", "/ui/", None, None).await;
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    let sizes: usize = ["/ui/", "/ui/app.js", "/ui/app.css"]
        .iter()
        .map(|path| async move { http(&rig.addr, "GET", path, None, None).await.body.len() })
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    eprintln!("web page: {sizes} bytes uncompressed (HTML + JS + CSS)");

    // /ui redirects to /ui/; the sign-in form is there, at phone width.
    let started = Instant::now();
    browser.goto(&rig.url("/ui")).await.unwrap();
    let here = browser.current_url().await.unwrap();
    assert_eq!(here.path(), "/ui/", "{here}");
    let token_field = css(browser, "#token").await;
    eprintln!("page loaded in {:?}", started.elapsed());

    // Sign in with the keyboard: type the token, press Enter.
    token_field
        .send_keys(&format!("{TOKEN}{}", char::from(fantoccini::key::Key::Enter)))
        .await
        .unwrap();
    status_says(browser, "Signed in: 0 namespaces").await;
    assert!(css(browser, "#app").await.is_displayed().await.unwrap());
    assert!(
        !css(browser, "#sign-in-section")
            .await
            .is_displayed()
            .await
            .unwrap()
    );
    // Focus moved to the first field of the create form.
    assert_eq!(
        script(browser, "return document.activeElement.id").await,
        "create-ttl"
    );
    // Not "remember me": the token is in memory only, never in a URL or a cookie.
    assert_eq!(
        script(
            browser,
            "return [sessionStorage.length, localStorage.length, document.cookie, location.href]"
        )
        .await,
        json!([0, 0, "", rig.url("/ui/")])
    );

    // Create, 10 minutes.
    css(browser, "#create-ttl").await.send_keys("10m").await.unwrap();
    let started = Instant::now();
    css(browser, "#create button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    status_says(browser, "Created np-").await;
    eprintln!("create: {:?} from click to the card", started.elapsed());
    let card = css(browser, "li.card").await;
    let name = card.attr("data-name").await.unwrap().unwrap();
    let managed = Api::<Namespace>::all(rig.admin.clone())
        .list(&ListParams::default().labels(&rig.selector))
        .await
        .unwrap();
    assert_eq!(
        managed.iter().map(ResourceExt::name_any).collect::<Vec<_>>(),
        vec![name.clone()]
    );
    let in_card = |what: &str| format!("li.card[data-name='{name}'] {what}");

    // The countdown shows about 10 minutes, and counts down.
    let first = text(browser, &in_card("time.countdown")).await;
    let first_seconds = countdown_seconds(&first);
    assert!((420..=600).contains(&first_seconds), "{first}");
    let first = &first;
    eventually(
        Duration::from_secs(30),
        "the countdown to go down",
        || async move {
            let now = text(browser, &in_card("time.countdown")).await;
            if countdown_seconds(&now) < first_seconds {
                Ok(())
            } else {
                Err(format!("{first} then {now}"))
            }
        },
    )
    .await;

    // Download the kubeconfig: the file is the one shown, and kubectl works with it.
    let link = css(browser, &in_card("a.download")).await;
    assert_eq!(
        link.attr("download").await.unwrap().as_deref(),
        Some(format!("{name}.kubeconfig").as_str())
    );
    link.click().await.unwrap();
    let file = rig.downloads.path().join(format!("{name}.kubeconfig"));
    let downloaded = eventually(Duration::from_secs(30), "the kubeconfig download", || {
        let file = file.clone();
        async move {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|text| !text.is_empty())
        }
    })
    .await;
    let shown = css(browser, &in_card("textarea"))
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(downloaded, shown);
    let out = support::kubectl_ok(&file, &["create", "configmap", "from-the-page"]);
    assert!(out.contains("from-the-page"), "{out}");
    support::kubectl_ok(&file, &["get", "configmap", "from-the-page"]);

    // Extend to 30 minutes from now: the expiry moves, the countdown follows.
    let before = api_expiry(rig, &name).await;
    css(browser, &in_card("form.extend input"))
        .await
        .send_keys("30m")
        .await
        .unwrap();
    css(browser, &in_card("form.extend button"))
        .await
        .click()
        .await
        .unwrap();
    status_says(browser, &format!("Extended {name}")).await;
    let after = api_expiry(rig, &name).await;
    assert!(after >= before + 15 * 60, "expiry {before} -> {after}");
    let left = countdown_seconds(&text(browser, &in_card("time.countdown")).await);
    assert!((25 * 60..=30 * 60).contains(&left), "{left}s left after extend");

    // Nothing sideways at phone width.
    assert_eq!(
        script(
            browser,
            "return [window.innerWidth, document.documentElement.scrollWidth <= window.innerWidth]"
        )
        .await,
        json!([WIDTH, true])
    );

    // Delete: the first press arms the button, the second deletes.
    let delete = css(browser, &in_card("button.delete")).await;
    delete.click().await.unwrap();
    status_says(browser, "Press Delete again").await;
    assert_eq!(
        Api::<Namespace>::all(rig.admin.clone())
            .get(&name)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp,
        None,
        "one press deleted"
    );
    delete.click().await.unwrap();
    status_says(browser, &format!("Deleting {name}")).await;
    let admin = rig.admin.clone();
    eventually(Duration::from_secs(90), "the namespace to be deleted", || {
        let api = Api::<Namespace>::all(admin.clone());
        let name = name.clone();
        async move {
            match api.get_opt(&name).await.unwrap() {
                None => true,
                Some(ns) => ns.metadata.deletion_timestamp.is_some(),
            }
        }
    })
    .await;

    // No console error, no CSP violation, nothing failed to load.
    let problems: Vec<Value> = browser_log(browser)
        .await
        .into_iter()
        .filter(|entry| {
            entry["level"] == "SEVERE"
                || entry["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Content Security Policy") || m.contains("Trusted Type"))
        })
        .collect();
    assert!(problems.is_empty(), "browser log: {problems:#?}");

    // The log is really read: a probe written now is there.
    script(browser, "console.error('np-probe')").await;
    let probe = browser_log(browser).await;
    assert!(
        probe
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("np-probe"))),
        "the browser log reader saw no probe: {probe:?}"
    );

    // The page's CSP is enforced: an inline script does not run.
    let inline = script(
        browser,
        "try { const s = document.createElement('script'); s.textContent = 'window.npInline = true'; \
         document.body.appendChild(s); return window.npInline ? 'ran' : 'blocked'; } \
         catch (e) { return e.name; }",
    )
    .await;
    assert_ne!(inline, json!("ran"));

    // An API error is shown as its problem+json title and detail; "remember"
    // keeps the token in sessionStorage only.
    css(browser, "#sign-out").await.click().await.unwrap();
    status_says(browser, "Signed out").await;
    css(browser, "#token")
        .await
        .send_keys("not-the-token")
        .await
        .unwrap();
    css(browser, "#sign-in button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the 401 to be shown", || async move {
        let error = text(browser, "#error").await;
        if error.contains("Unauthorized (401)") {
            Ok(())
        } else {
            Err(error)
        }
    })
    .await;
    css(browser, "#remember").await.click().await.unwrap();
    let field = css(browser, "#token").await;
    field.clear().await.unwrap();
    field.send_keys(TOKEN).await.unwrap();
    css(browser, "#sign-in button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    status_says(browser, "Signed in").await;
    assert_eq!(
        script(
            browser,
            "return [sessionStorage.getItem('np-token') !== null, localStorage.length, document.cookie]"
        )
        .await,
        json!([true, 0, ""])
    );
    // A reload in the same tab stays signed in; signing out forgets the token.
    browser.refresh().await.unwrap();
    status_says(browser, "Signed in").await;

    // A namespace made elsewhere (here: curl-style): "Get kubeconfig" issues one
    // without moving its expiry.
    let made = http(
        &rig.addr,
        "POST",
        "/api/v1/namespaces",
        Some(TOKEN),
        Some(r#"{"ttl": "20m"}"#),
    )
    .await;
    assert_eq!(made.status, 201, "{made:?}");
    let other = made.json()["name"].as_str().unwrap().to_owned();
    let expiry = api_expiry(rig, &other).await;
    css(browser, "#refresh").await.click().await.unwrap();
    let get = css(
        browser,
        &format!("li.card[data-name='{other}'] button.kubeconfig"),
    )
    .await;
    get.click().await.unwrap();
    status_says(browser, &format!("The kubeconfig of {other} is ready")).await;
    let link = css(browser, &format!("li.card[data-name='{other}'] a.download")).await;
    assert!(link.is_displayed().await.unwrap());
    assert!(!get.is_displayed().await.unwrap());
    let yaml = css(browser, &format!("li.card[data-name='{other}'] textarea"))
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(yaml.contains(&format!("namespace: {other}")), "{yaml}");
    let kept = api_expiry(rig, &other).await;
    assert!(
        (expiry - 2..=expiry + 1).contains(&kept),
        "expiry {expiry} -> {kept}"
    );

    // A refused create (a parent that allows no one) shows the API's title and detail.
    css(browser, "#create-parent")
        .await
        .send_keys(&other)
        .await
        .unwrap();
    css(browser, "#create button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the 403 to be shown", || async move {
        let error = text(browser, "#error").await;
        if error.contains("Forbidden (403)") && error.contains("is not a parent") {
            Ok(())
        } else {
            Err(error)
        }
    })
    .await;

    css(browser, "#sign-out").await.click().await.unwrap();
    assert_eq!(script(browser, "return sessionStorage.length").await, json!(0));
}

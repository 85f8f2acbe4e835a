//! The one HTTP client of the tests (hyper over a real socket), the request
//! builder and response collector shared with in-process `Router::oneshot`
//! calls, and a reader for OpenMetrics samples.

/// An HTTP answer, body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A request as the API's callers send it: optional bearer token, JSON body.
pub fn request(method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> http::Request<String> {
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    request.body(body.unwrap_or_default().to_owned()).unwrap()
}

/// Collect a response, whichever transport carried it.
pub async fn answer<B>(response: http::Response<B>) -> Answer
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// One HTTP/1.1 request over a real socket, or `None` when nothing answers.
pub async fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<Answer> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    let client: HttpClient<_, Full<bytes::Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let request = request(method, &format!("http://{addr}{path}"), token, body).map(|b| Full::new(b.into()));
    Some(answer(client.request(request).await.ok()?).await)
}

/// One HTTP/1.1 request over a real socket; panics when nothing answers.
pub async fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    try_http(addr, method, path, token, body)
        .await
        .unwrap_or_else(|| panic!("nothing answers {method} http://{addr}{path}"))
}

/// The value of the sample `name` (no labels) in an OpenMetrics text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The sample `name` from `GET http://addr/metrics`, or `None` when nothing
/// answers or the sample is missing.
pub async fn metric(addr: &str, name: &str) -> Option<f64> {
    let answer = try_http(addr, "GET", "/metrics", None, None).await?;
    sample(&answer.body, name)
}

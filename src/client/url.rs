//! Client URLs, `ws://`/`wss://` and `http://`/`https://`, split for
//! connecting, and the one way `host:port` is written (IPv6 literals in
//! brackets).

/// A `ws://host:port/path?query` (or `wss://`) URL, split for connecting.
#[derive(Debug, Clone)]
pub struct WsUrl {
    pub text: String,
    pub host: String,
    pub port: u16,
    /// `wss://`: TLS beneath the WebSocket.
    pub tls: bool,
}

impl WsUrl {
    pub fn parse(text: &str) -> Result<WsUrl, String> {
        let (host, port, _, tls) = split(text, "ws")?;
        Ok(WsUrl {
            text: text.to_string(),
            host,
            port,
            tls,
        })
    }
}

/// An `http://host:port/path` (or `https://`) URL, split for connecting.
#[derive(Debug, Clone)]
pub struct HttpUrl {
    pub text: String,
    pub host: String,
    pub port: u16,
    /// The path and query, `/` when the URL has none.
    pub path: String,
    /// `https://`.
    pub tls: bool,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let (host, port, path, tls) = split(text, "http")?;
        Ok(HttpUrl {
            text: text.to_string(),
            host,
            port,
            path,
            tls,
        })
    }

    /// `host:port`, as a Host header carries it.
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Host (brackets off), port (80, or 443 with TLS, by default), path
/// (`/` at least) and TLS of a URL whose scheme must be `scheme` or its
/// TLS form (`scheme` + `s`).
fn split(text: &str, scheme: &str) -> Result<(String, u16, String, bool), String> {
    let uri: tungstenite::http::Uri = text.parse().map_err(|e| format!("{e}"))?;
    let tls = match uri.scheme_str() {
        Some(s) if s == scheme => false,
        Some(s) if s == format!("{scheme}s") => true,
        _ => return Err(format!("the scheme must be {scheme}:// or {scheme}s://")),
    };
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let path = match uri.path_and_query().map_or("", |p| p.as_str()) {
        "" => "/".to_string(),
        path => path.to_string(),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, path, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_split_into_host_and_port() {
        let url = WsUrl::parse("ws://127.0.0.1:7788/image?response=fast").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 7788));
        let url = WsUrl::parse("ws://[::1]:9/").unwrap();
        assert_eq!(url.host, "::1");
        assert!(WsUrl::parse("http://x/").is_err());
        let url = WsUrl::parse("wss://example.com/chat").unwrap();
        assert!(url.tls);
        assert_eq!(url.port, 443);
        assert!(!WsUrl::parse("ws://x/").unwrap().tls);
    }

    #[test]
    fn http_urls_split_into_host_port_and_path() {
        let url = HttpUrl::parse("http://127.0.0.1:7788/metrics").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 7788));
        assert_eq!(url.path, "/metrics");
        assert_eq!(HttpUrl::parse("http://x:1").unwrap().path, "/");
        assert_eq!(
            HttpUrl::parse("http://[::1]:9/").unwrap().authority(),
            "[::1]:9"
        );
        assert!(HttpUrl::parse("ws://x/").is_err());
        let url = HttpUrl::parse("https://x/metrics").unwrap();
        assert_eq!((url.port, url.tls), (443, true));
    }
}

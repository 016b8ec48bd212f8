//! The one place a client command starts a server in its own process:
//! `bench`, `pingpong` and `load` without a URL run against it, on an
//! ephemeral port, and shut it down when they are done.

use crate::cli::{ServerArgs, TlsArgs};
use crate::client::WsUrl;
use crate::error::Error;
use crate::server::{self, Handle};

/// A server in this process on an ephemeral port of `args.host`.
pub fn start(args: ServerArgs) -> Result<Handle, Error> {
    server::start(ServerArgs { port: 0, ..args })
}

/// Where a client command sends: `url` when given, else `/` of a server
/// started here with `args()`, returned too so the caller can shut it down.
/// Sets up the process's TLS clients from `trust`; a TLS server started
/// here (`args().tls_self_signed`) is trusted too.
pub fn url_or_embedded(
    url: Option<&str>,
    trust: &TlsArgs,
    args: impl FnOnce() -> ServerArgs,
) -> Result<(WsUrl, Option<Handle>), Error> {
    let (text, embedded) = match url {
        Some(url) => {
            crate::client::tls::install(trust, &[])?;
            (url.to_string(), None)
        }
        None => {
            let handle = start(args())?;
            let ours: Vec<_> = handle.certificate.iter().cloned().collect();
            crate::client::tls::install(trust, &ours)?;
            (format!("{}/", handle.url()), Some(handle))
        }
    };
    let url = WsUrl::parse(&text).map_err(|why| Error::Url { url: text, why })?;
    Ok((url, embedded))
}

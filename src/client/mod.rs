//! The client side of every command: URLs, connecting (one stream type for
//! every client's bytes), the masked send path of `bench`, and the thin
//! HTTP/1.1 client of `pingpong` and `load`. Nothing here imports the
//! server.

pub mod connect;
pub mod http;
pub mod masked;
pub mod tls;
pub mod url;

pub use connect::{ConnectError, Connected, connect, connect_split};
pub use url::{HttpUrl, WsUrl};

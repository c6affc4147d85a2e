//! stub
pub async fn run() {}

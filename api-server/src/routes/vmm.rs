//! `vmm.*`: the process itself. `vmm.ping` answers from static data; `vmm.shutdown` stops the
//! VM and ends the process once the reply is flushed.

use ::vmm::api::Request;

use super::{get, put, Call, Route};
use crate::reply::{Family, HttpReply};

pub const ROUTES: &[Route] = &[get("vmm.ping"), put("vmm.shutdown")];

pub async fn handle(call: Call<'_>) -> HttpReply {
    match call.name {
        "vmm.ping" => HttpReply::json(&call.ctx.info),
        _ => HttpReply::from_result(
            Family::CloudHypervisor,
            call.ctx.submit(Request::VmmShutdown).await,
        ),
    }
}

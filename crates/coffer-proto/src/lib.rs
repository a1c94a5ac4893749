//! Generated code for the `coffer.v1` gRPC API (messages, clients, servers) and
//! the encoded file descriptor set that reflection and JSON rendering need.
//! Nothing here is written by hand; edit `proto/` instead. Modules mirror the
//! protobuf packages so cross-package references resolve.

#![allow(unreachable_pub, missing_debug_implementations, clippy::all)]

/// Protobuf package `coffer`.
pub mod coffer {
    /// `coffer.v1`: the Coffer API.
    pub mod v1 {
        tonic::include_proto!("coffer.v1");
    }
}

/// The few `google.rpc` messages the API refers to.
pub mod google {
    /// `google.rpc`.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub use coffer::v1;

/// The encoded `FileDescriptorSet` of every file in `proto/` and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coffer_descriptor.bin"));

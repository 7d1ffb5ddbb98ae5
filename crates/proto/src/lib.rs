//! Generated protobuf and gRPC code for `eldercare.v1`: the device
//! protocol's `DeviceMessage` and the operator API services.
#![allow(clippy::all, missing_docs)]

/// The well-known types the messages use (`Timestamp`), with serde in
/// the protobuf JSON mapping.
pub use pbjson_types as wkt;

pub mod v1 {
    tonic::include_proto!("eldercare.v1");
    include!(concat!(env!("OUT_DIR"), "/eldercare.v1.serde.rs"));

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/eldercare_descriptor.bin"));
}

//! Generated protobuf and gRPC code for `eldercare.v1`: the device
//! protocol's `DeviceMessage` and the operator API services.
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("eldercare.v1");

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/eldercare_descriptor.bin"));
}

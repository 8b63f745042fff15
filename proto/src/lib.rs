//! Protobuf schemas of purgecast: `wire` (node to node, prost only) and,
//! with the `grpc` feature, `api` (the public gRPC services, tonic).

#[allow(clippy::all, clippy::pedantic)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/purgecast.wire.v1.rs"));
}

#[cfg(feature = "grpc")]
#[allow(clippy::all, clippy::pedantic)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/purgecast.api.v1.rs"));

    /// Encoded descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/api_descriptor.bin"));
}

/// Version carried in every wire envelope.
pub const WIRE_VERSION: u32 = 1;

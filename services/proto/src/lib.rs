//! Generated code for the fleet's protobuf packages (`proto/` at the repository root).
//!
//! Each package is versioned (`fleet.telemetry.v1`, ...) and mirrored here as a module
//! path, so `fleet_proto::telemetry::v1::Reading` is `fleet.telemetry.v1.Reading`.

#![allow(missing_debug_implementations, clippy::all)]

pub mod telemetry {
    pub mod v1 {
        tonic::include_proto!("fleet.telemetry.v1");
    }
}

pub mod alarm {
    pub mod v1 {
        tonic::include_proto!("fleet.alarm.v1");
    }
}

pub mod clinic {
    pub mod v1 {
        tonic::include_proto!("fleet.clinic.v1");
    }
}

pub mod api {
    pub mod v1 {
        tonic::include_proto!("fleet.api.v1");
    }
}

pub use prost;
pub use prost_types;

//! The standard gRPC services a node serves next to its own: reflection in
//! both protocol versions tools speak, and health.

use purgecast_tests::*;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const PURGER: &str = "purgecast.api.v1.Purger";
const INDEX: &str = "purgecast.api.v1.Index";

/// grpcurl and Postman ask `grpc.reflection.v1`; Python's
/// grpcio-reflection, older grpcurl and Evans ask `v1alpha`. Both must list
/// the API and describe it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_list_and_describe_the_api() {
    let c = Cluster::start(1, Opts::default()).await.unwrap();
    let ch = c.channel(0).await.unwrap();

    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(PURGER.into())),
            },
        ];
        let mut replies = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) = replies.next().await.unwrap().unwrap().message_response
        else {
            panic!("v1: expected a service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == PURGER) && names.iter().any(|n| n == INDEX), "v1 lists {names:?}");
        let Some(MessageResponse::FileDescriptorResponse(fd)) = replies.next().await.unwrap().unwrap().message_response
        else {
            panic!("v1: expected a file descriptor")
        };
        assert!(!fd.file_descriptor_proto.is_empty(), "v1 describes {PURGER}");
    }
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let reqs = vec![
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(PURGER.into())),
            },
        ];
        let mut replies = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) = replies.next().await.unwrap().unwrap().message_response
        else {
            panic!("v1alpha: expected a service list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == PURGER) && names.iter().any(|n| n == INDEX), "v1alpha lists {names:?}");
        let Some(MessageResponse::FileDescriptorResponse(fd)) = replies.next().await.unwrap().unwrap().message_response
        else {
            panic!("v1alpha: expected a file descriptor")
        };
        assert!(!fd.file_descriptor_proto.is_empty(), "v1alpha describes {PURGER}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_node_is_serving_over_grpc_health_and_readyz() {
    let c = Cluster::start(1, Opts::default()).await.unwrap();
    let mut h = HealthClient::new(c.channel(0).await.unwrap());
    for service in ["", PURGER, INDEX] {
        let s = h.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(s.status(), ServingStatus::Serving, "service {service:?}");
    }
    let (code, body) = metrics::http_get(c.nodes[0].metrics, "/readyz").await.unwrap();
    assert_eq!((code, body.as_str()), (200, "ready\n"));
}

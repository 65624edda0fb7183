//! HTTP/1.1 REST API on a Unix socket, compatible with Cloud Hypervisor's, plus the pod-sandbox
//! layer. Requests become `vmm` commands; nothing here touches the VM directly.

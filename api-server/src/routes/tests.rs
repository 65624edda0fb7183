use super::*;

#[test]
fn every_route_is_unique_and_named_by_resource() {
    let routes = all();
    for (i, route) in routes.iter().enumerate() {
        assert!(
            ["vmm.", "vm.", "sandbox."]
                .iter()
                .any(|p| route.name.starts_with(p)),
            "{route:?}"
        );
        assert!(matches!(route.method, "GET" | "PUT"), "{route:?}");
        assert!(
            routes[i + 1..].iter().all(|r| r.name != route.name),
            "{route:?} twice"
        );
    }
}

#[test]
fn families_follow_the_path() {
    assert_eq!(family_of("/api/v1/sandbox.wait"), Family::Sandbox);
    assert_eq!(family_of("/api/v1/vm.info"), Family::CloudHypervisor);
    assert_eq!(family_of("/nowhere"), Family::CloudHypervisor);
}

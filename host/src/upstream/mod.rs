//! Clusters, endpoints, subsets, load balancers, DNS and connection pools.

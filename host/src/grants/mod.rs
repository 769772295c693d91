pub mod descriptors;
pub mod egress;
pub mod granted_dirs;
pub mod outbound;
pub mod sockets;
pub mod upstream;
pub mod upstream_pool;

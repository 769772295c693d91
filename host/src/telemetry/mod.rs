pub mod log_rate;
pub mod request_metrics;

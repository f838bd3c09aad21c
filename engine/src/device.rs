//! Choosing the device a node runs on.

use flow_stdlib::op::Device;

use crate::ir::DeviceRequest;

/// Parses a `--device` value: `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(text: &str) -> Result<DeviceRequest, String> {
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "auto" => Ok(DeviceRequest::Auto),
        "cpu" => Ok(DeviceRequest::Cpu),
        "cuda" | "gpu" => Ok(DeviceRequest::Cuda(None)),
        _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceRequest::Cuda(Some(n))),
            _ => Err(format!(
                "unknown device `{text}`: expected auto, cpu, cuda or cuda:N"
            )),
        },
    }
}

/// Number of CUDA devices usable by this process, and why there are none.
///
/// Probes the driver without touching cudarc first (cudarc panics when
/// libcuda is missing), once per process.
pub fn cuda_devices() -> (usize, Option<String>) {
    match flow_kernels::cuda::probe() {
        Ok(info) => (info.devices, None),
        Err(e) => (0, Some(e.to_string())),
    }
}

/// Resolves a device request to the device a node runs on. Returns a
/// one-line notice when the request could not be honoured (CUDA asked for
/// but not available), so the caller can print it once.
pub fn resolve_device(req: DeviceRequest) -> (Device, Option<String>) {
    let (count, why) = match req {
        DeviceRequest::Cpu => (0, None),
        _ => cuda_devices(),
    };
    match req {
        DeviceRequest::Cpu => (Device::Cpu, None),
        DeviceRequest::Auto => {
            if count > 0 {
                (Device::Cuda(0), None)
            } else {
                (Device::Cpu, None)
            }
        }
        DeviceRequest::Cuda(n) => {
            let n = n.unwrap_or(0);
            if n < count {
                (Device::Cuda(n), None)
            } else {
                (
                    Device::Cpu,
                    Some(match why {
                        Some(why) => format!("flow: cuda:{n} requested, but {why}; running on the CPU"),
                        None => format!("flow: cuda:{n} requested, but only {count} CUDA device(s) exist; running on the CPU"),
                    }),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(parse_device("auto"), Ok(DeviceRequest::Auto));
        assert_eq!(parse_device("CPU"), Ok(DeviceRequest::Cpu));
        assert_eq!(parse_device("cuda"), Ok(DeviceRequest::Cuda(None)));
        assert_eq!(parse_device("cuda:1"), Ok(DeviceRequest::Cuda(Some(1))));
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn cuda_without_devices_falls_back_with_a_notice() {
        let (d, notice) = resolve_device(DeviceRequest::Cuda(None));
        assert_eq!(d, Device::Cpu);
        assert!(notice.is_some());
        assert_eq!(resolve_device(DeviceRequest::Auto), (Device::Cpu, None));
    }
}

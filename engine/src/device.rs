//! Choosing the device a node runs on.

use crate::op::Device;

use crate::ir::DeviceRequest;

/// Parses a device, as `--device` and a node's `device:` argument spell
/// it (the one parser of both): `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(text: &str) -> Result<DeviceRequest, String> {
    match text {
        "auto" => Ok(DeviceRequest::Auto),
        "cpu" => Ok(DeviceRequest::Cpu),
        "cuda" => Ok(DeviceRequest::Cuda(None)),
        _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceRequest::Cuda(Some(n))),
            _ => Err(format!(
                "unknown device `{text}`: expected auto, cpu, cuda or cuda:N"
            )),
        },
    }
}

/// Counts the CUDA devices this process can use, or says why there are
/// none. The engine knows no driver: the binary passes the kernel crate's
/// probe in (see `RunOptions::cuda_probe`), tests pass their own.
pub type CudaProbe = fn() -> Result<usize, String>;

/// The probe of a build without a CUDA backend (the library default).
pub fn no_cuda() -> Result<usize, String> {
    Err("this build of flow has no CUDA backend".to_string())
}

/// Resolves a device request to the device a node runs on. Returns a
/// one-line notice when the request could not be honoured (CUDA asked for
/// but not available), so the caller can print it once.
pub fn resolve_device(req: DeviceRequest, probe: CudaProbe) -> (Device, Option<String>) {
    let (count, why) = match req {
        DeviceRequest::Cpu => (0, None),
        _ => match probe() {
            Ok(n) => (n, None),
            Err(why) => (0, Some(why)),
        },
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
        assert_eq!(parse_device("cpu"), Ok(DeviceRequest::Cpu));
        // One spelling, as the language documents it.
        assert!(parse_device("CPU").is_err());
        assert!(parse_device("gpu").is_err());
        assert_eq!(parse_device("cuda"), Ok(DeviceRequest::Cuda(None)));
        assert_eq!(parse_device("cuda:1"), Ok(DeviceRequest::Cuda(Some(1))));
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    fn two_gpus() -> Result<usize, String> {
        Ok(2)
    }

    fn driver_missing() -> Result<usize, String> {
        Err("libcuda.so.1 not found".to_string())
    }

    #[test]
    fn cuda_without_a_driver_falls_back_with_a_notice_naming_why() {
        let (d, notice) = resolve_device(DeviceRequest::Cuda(None), driver_missing);
        assert_eq!(d, Device::Cpu);
        assert!(notice.unwrap().contains("libcuda.so.1 not found"));
        assert_eq!(
            resolve_device(DeviceRequest::Auto, driver_missing),
            (Device::Cpu, None)
        );
    }

    #[test]
    fn cuda_with_devices_is_honoured_and_a_missing_index_falls_back() {
        assert_eq!(
            resolve_device(DeviceRequest::Auto, two_gpus),
            (Device::Cuda(0), None)
        );
        assert_eq!(
            resolve_device(DeviceRequest::Cuda(Some(1)), two_gpus),
            (Device::Cuda(1), None)
        );
        let (d, notice) = resolve_device(DeviceRequest::Cuda(Some(2)), two_gpus);
        assert_eq!(d, Device::Cpu);
        assert!(notice.unwrap().contains("only 2 CUDA device(s)"));
    }

    #[test]
    fn cpu_never_probes() {
        fn probe_must_not_run() -> Result<usize, String> {
            panic!("the CPU request probed the driver")
        }
        assert_eq!(
            resolve_device(DeviceRequest::Cpu, probe_must_not_run),
            (Device::Cpu, None)
        );
    }
}

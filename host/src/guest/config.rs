//! `wasi:config/store` for guests, in the versions toolchains emit:
//! 0.2.0-rc.1 (what `wasmtime serve -S config` links, from the WIT of
//! wasmtime-wasi-config 48), 0.2.0-draft (the interface's repository) and
//! 0.2.0-draft-2024-09-27 (Spin 3's), the same WIT under three versions,
//! bound once each. All answer from the app's granted variables: `get` of
//! any other key is none.

use crate::config::ConfigVars;
use anyhow::Result;
use wasmtime::component::{HasData, Linker};

macro_rules! version {
    ($module:ident, $path:literal) => {
        mod $module {
            wasmtime::component::bindgen!({
                path: $path,
                world: "wasi:config/imports",
                imports: { default: trappable },
            });

            use super::Config;
            use wasi::config::store;

            impl store::Host for Config<'_> {
                fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
                    Ok(Ok(self.0.get(&key).map(str::to_string)))
                }

                fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
                    Ok(Ok(self
                        .0
                        .iter()
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect()))
                }
            }

            pub fn add_to_linker<T: 'static>(
                linker: &mut wasmtime::component::Linker<T>,
                view: fn(&mut T) -> Config<'_>,
            ) -> anyhow::Result<()> {
                store::add_to_linker::<_, super::HasConfig>(linker, view)?;
                Ok(())
            }
        }
    };
}

version!(rc1, "../wit/deps/config");
version!(draft, "../wit/deps/config-draft");
version!(dated, "../wit/deps/config-draft-2024-09-27");

/// An instance's view of its app's variables.
pub struct Config<'a>(pub &'a ConfigVars);

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = Config<'a>;
}

/// Links every version.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Config<'_>,
) -> Result<()> {
    rc1::add_to_linker(linker, view)?;
    draft::add_to_linker(linker, view)?;
    dated::add_to_linker(linker, view)
}

@_exported import FerretPluginABI

namespace SensMerging.Host.Plugins;

/// <summary>Why a plugin is or is not in use. Every plugin the host knows of has exactly one.</summary>
public enum PluginStatus
{
    /// <summary>Loaded; its components are available.</summary>
    Loaded,

    /// <summary>Listed with <c>enabled: false</c>.</summary>
    Disabled,

    /// <summary>The folder or the main assembly does not exist.</summary>
    NotFound,

    /// <summary>plugin.json is missing, unreadable or inconsistent.</summary>
    InvalidManifest,

    /// <summary>The assembly is not a plugin (not .NET, no configurator, or no components).</summary>
    NotAPlugin,

    /// <summary>Built for a contract version this host does not support.</summary>
    Incompatible,

    /// <summary>Its configurator or a component's constructor threw.</summary>
    Malfunctioned,

    /// <summary>Another plugin already claimed a component name it provides.</summary>
    Conflict,

    /// <summary>Another plugin with the same id and a newer (or, when equal, an earlier listed) version is in use.</summary>
    Superseded,
}

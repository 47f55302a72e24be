using SensMerging.Abstractions;

namespace SensMerging.Host.Plugins;

/// <summary>What the host knows of one plugin, loaded or not.</summary>
public sealed record PluginDescriptor
{
    public required string Id { get; init; }

    public string? Version { get; init; }

    public string? ContractVersion { get; init; }

    public string? Description { get; init; }

    /// <summary>The folder or assembly the plugin was found at.</summary>
    public required string Source { get; init; }

    public required PluginStatus Status { get; init; }

    /// <summary>Why the plugin is not loaded (null when loaded).</summary>
    public string? Reason { get; init; }

    /// <summary>
    /// The exception behind a refusal with its stack trace (null when loaded, or when the refusal had no underlying
    /// exception); <c>plugins list -v</c> prints it for plugin authors.
    /// </summary>
    public string? Failure { get; init; }

    /// <summary>sha256 of the main assembly, for provenance.</summary>
    public string? AssemblySha256 { get; init; }

    public IReadOnlyList<PluginComponent> Components { get; init; } = [];

    /// <summary>
    /// The plugin's own service provider, which owns its components; disposing it disposes every component that is
    /// <see cref="IDisposable"/>, and its collectible load context, which it unloads after them. Null for a plugin that is
    /// not in use.
    /// </summary>
    internal IDisposable? Lifetime { get; init; }

    /// <summary>This plugin out of use: its components are disposed and dropped, with <paramref name="status"/> and <paramref name="reason"/>.</summary>
    internal PluginDescriptor Retire(PluginStatus status, string reason)
    {
        Lifetime?.Dispose();
        return this with { Status = status, Reason = reason, Components = [], Lifetime = null };
    }
}

/// <summary>The kinds of component a plugin can register.</summary>
public enum ComponentKind
{
    Strategy,
    Scorer,
    Decorator,
}

/// <summary>A component a loaded plugin registered.</summary>
public sealed record PluginComponent(ComponentKind Kind, IPluginComponent Instance)
{
    public string Name => Instance.Name;
}

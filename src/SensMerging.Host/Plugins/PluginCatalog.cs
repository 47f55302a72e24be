using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;

namespace SensMerging.Host.Plugins;

/// <summary>
/// Every plugin listed in plugins.json or found under its search paths, with its status, and the components of the
/// loaded ones by name. Built once at start; a plugin that cannot be used is listed with its reason and skipped.
/// </summary>
public sealed partial class PluginCatalog : IDisposable
{
    private readonly Dictionary<(ComponentKind, string), (PluginComponent Component, PluginDescriptor Plugin)> _components = [];

    private PluginCatalog(IReadOnlyList<PluginDescriptor> plugins, string? source)
    {
        Plugins = plugins;
        SourceFile = source;
        foreach (var plugin in plugins.Where(p => p.Status == PluginStatus.Loaded))
        {
            foreach (var component in plugin.Components)
            {
                _components[(component.Kind, component.Name)] = (component, plugin);
            }
        }
    }

    /// <summary>Every plugin the host knows of, in the order found.</summary>
    public IReadOnlyList<PluginDescriptor> Plugins { get; }

    /// <summary>The plugins.json the catalog was read from (null when none was found).</summary>
    public string? SourceFile { get; }

    public static PluginCatalog Empty { get; } = new([], null);

    /// <summary>
    /// Disposes every loaded plugin's components and unloads its assemblies (the host's container calls this when the
    /// host stops). The catalog holds no component afterwards.
    /// </summary>
    public void Dispose()
    {
        _components.Clear();
        foreach (var plugin in Plugins)
        {
            plugin.Lifetime?.Dispose();
        }
    }

    /// <summary>Reads plugins.json and loads every plugin it names or its search paths hold.</summary>
    public static PluginCatalog Load(string pluginsFile, PluginLoader loader, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(loader);
        if (!File.Exists(pluginsFile))
        {
            LogNoPluginsFile(logger, pluginsFile);
            return new PluginCatalog([], pluginsFile);
        }
        var file = PluginsFile.Read(pluginsFile);
        var root = Path.GetDirectoryName(Path.GetFullPath(pluginsFile)) ?? ".";
        var entries = new List<PluginEntry>(file.Plugins);
        var listed = new HashSet<string>(file.Plugins.Select(p => FullFolder(root, p.Path)), StringComparer.Ordinal);
        foreach (var search in file.SearchPaths)
        {
            var dir = Path.GetFullPath(Path.Combine(root, ExpandHome(search)));
            if (!Directory.Exists(dir))
            {
                continue;
            }
            foreach (var sub in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
            {
                if (File.Exists(Path.Combine(sub, PluginContract.ManifestFileName)) && listed.Add(Path.GetFullPath(sub)))
                {
                    entries.Add(new PluginEntry { Path = sub });
                }
            }
        }
        return Load(entries, root, loader, Path.GetFullPath(pluginsFile));
    }

    /// <summary>Loads the given entries (paths relative to <paramref name="root"/>), resolving id and name conflicts.</summary>
    public static PluginCatalog Load(IEnumerable<PluginEntry> entries, string root, PluginLoader loader, string? sourceFile = null)
    {
        ArgumentNullException.ThrowIfNull(loader);
        var result = new List<PluginDescriptor>();
        var ids = new Dictionary<string, PluginDescriptor>(StringComparer.Ordinal);
        var names = new Dictionary<(ComponentKind, string), PluginDescriptor>();
        foreach (var entry in entries)
        {
            var path = Path.GetFullPath(Path.Combine(root, ExpandHome(entry.Path)));
            if (!entry.Enabled)
            {
                result.Add(new PluginDescriptor { Id = entry.Id ?? Path.GetFileName(path), Source = path, Status = PluginStatus.Disabled, Reason = "disabled in plugins.json" });
                continue;
            }
            var descriptor = loader.Load(path, entry.Id, entry.Settings);
            ids.TryGetValue(descriptor.Id, out var sameId);
            if (descriptor.Status == PluginStatus.Loaded && sameId is not null
                && !PluginVersion.IsNewer(descriptor.Version ?? string.Empty, sameId.Version ?? string.Empty))
            {
                descriptor = Superseded(descriptor, sameId);
            }
            if (descriptor.Status == PluginStatus.Loaded)
            {
                // The components of an older version of the same id are about to step back: they are no conflict.
                descriptor = CheckConflicts(descriptor, names, replacing: sameId);
            }
            if (descriptor.Status == PluginStatus.Loaded && sameId is not null)
            {
                // The newer version wins: the one loaded before steps back with its components.
                result[result.IndexOf(sameId)] = Superseded(sameId, descriptor);
                ids.Remove(sameId.Id);
                foreach (var component in sameId.Components)
                {
                    names.Remove((component.Kind, component.Name));
                }
            }
            if (descriptor.Status == PluginStatus.Loaded)
            {
                ids[descriptor.Id] = descriptor;
                foreach (var component in descriptor.Components)
                {
                    names[(component.Kind, component.Name)] = descriptor;
                }
            }
            result.Add(descriptor);
        }
        return new PluginCatalog(result, sourceFile);
    }

    private static PluginDescriptor Superseded(PluginDescriptor plugin, PluginDescriptor winner) => plugin.Retire(
        PluginStatus.Superseded, $"id '{plugin.Id}': version {winner.Version} at {winner.Source} is used instead of {plugin.Version}");

    private static PluginDescriptor CheckConflicts(PluginDescriptor plugin, Dictionary<(ComponentKind, string), PluginDescriptor> names, PluginDescriptor? replacing)
    {
        foreach (var component in plugin.Components)
        {
            if (names.TryGetValue((component.Kind, component.Name), out var owner) && !ReferenceEquals(owner, replacing))
            {
                return plugin.Retire(
                    PluginStatus.Conflict,
                    $"{component.Kind.ToString().ToLowerInvariant()} name '{component.Name}' is already provided by plugin '{owner.Id}' ({owner.Source})");
            }
        }
        return plugin;
    }

    private static string FullFolder(string root, string path)
    {
        var full = Path.GetFullPath(Path.Combine(root, ExpandHome(path)));
        return File.Exists(full) ? Path.GetDirectoryName(full)! : full;
    }

    private static string ExpandHome(string path) =>
        path.StartsWith("~/", StringComparison.Ordinal)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path[2..])
            : path;

    public IEnumerable<(PluginComponent Component, PluginDescriptor Plugin)> Components(ComponentKind kind) =>
        _components.Where(kv => kv.Key.Item1 == kind).Select(kv => kv.Value).OrderBy(c => c.Component.Name, StringComparer.Ordinal);

    public IMergeStrategy GetStrategy(string name) => (IMergeStrategy)Get(ComponentKind.Strategy, name).Component.Instance;

    public IScorer GetScorer(string name) => (IScorer)Get(ComponentKind.Scorer, name).Component.Instance;

    public IStrategyDecorator GetDecorator(string name) => (IStrategyDecorator)Get(ComponentKind.Decorator, name).Component.Instance;

    /// <summary>The plugin that provides a component (for provenance).</summary>
    public PluginDescriptor PluginOf(ComponentKind kind, string name) => Get(kind, name).Plugin;

    private (PluginComponent Component, PluginDescriptor Plugin) Get(ComponentKind kind, string name)
    {
        if (_components.TryGetValue((kind, name), out var found))
        {
            return found;
        }
        var available = Components(kind).Select(c => c.Component.Name).ToList();
        var refused = Plugins.Where(p => p.Status != PluginStatus.Loaded).Select(p => $"{p.Id} ({p.Status}: {p.Reason})").ToList();
        var message = $"no {kind.ToString().ToLowerInvariant()} named '{name}' is loaded; available: {(available.Count == 0 ? "none" : string.Join(", ", available))}";
        if (refused.Count > 0)
        {
            message += $"; plugins not loaded: {string.Join("; ", refused)}";
        }
        throw new KeyNotFoundException(message);
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Warning, Message = "No plugins file at {Path}: no plugins loaded")]
    private static partial void LogNoPluginsFile(ILogger logger, string path);
}

using System.Reflection;
using System.Security.Cryptography;
using McMaster.NETCore.Plugins;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;

namespace SensMerging.Host.Plugins;

/// <summary>
/// Loads one plugin folder into a load context of its own (McMaster.NETCore.Plugins), sharing the contract, TorchSharp
/// and the Microsoft.Extensions abstractions with the host, and builds the plugin's components through its configurator.
/// Every failure becomes a <see cref="PluginLoadException"/> with a status; nothing here takes the host down.
/// </summary>
public sealed partial class PluginLoader
{
    /// <summary>
    /// The assemblies the host shares with every plugin (one type identity across the boundary): the contract and every
    /// assembly it references outside the .NET framework (TorchSharp, the DI and logging abstractions). Derived from the
    /// contract itself, so a new dependency of the contract is shared without a second list to keep in step; the
    /// contract's build targets, which keep those packages out of plugin folders, are checked against it by a test.
    /// </summary>
    public static IReadOnlyList<AssemblyName> SharedAssemblies { get; } = ContractClosure();

    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger<PluginLoader> _logger;

    public PluginLoader(ILoggerFactory loggerFactory)
    {
        _loggerFactory = loggerFactory;
        _logger = loggerFactory.CreateLogger<PluginLoader>();
    }

    /// <summary>Loads the plugin at <paramref name="path"/> (a folder or its main assembly).</summary>
    public PluginDescriptor Load(string path, string? expectedId, IReadOnlyDictionary<string, string> settings)
    {
        var folder = Directory.Exists(path) ? path : Path.GetDirectoryName(path) ?? path;
        PluginManifest? manifest = null;
        try
        {
            manifest = ReadManifest(path, folder);
            if (expectedId is not null && !string.Equals(expectedId, manifest.Id, StringComparison.Ordinal))
            {
                throw new PluginLoadException(PluginStatus.InvalidManifest, $"plugins.json names it '{expectedId}' but its plugin.json declares id '{manifest.Id}'");
            }
            CheckContractVersion(manifest.ContractVersion, "its plugin.json declares contract");
            var assemblyPath = Path.Combine(folder, manifest.Assembly);
            if (!File.Exists(assemblyPath))
            {
                throw new PluginLoadException(PluginStatus.NotFound, $"main assembly {assemblyPath} does not exist");
            }
            CheckIsManagedAssembly(assemblyPath);
            var (components, lifetime, compiledContract) = CreateComponents(manifest, folder, assemblyPath, settings);
            if (!SameContract(manifest.ContractVersion, compiledContract))
            {
                // The assembly's reference is what the plugin really uses: list that, and say the manifest disagrees.
                LogContractMismatch(manifest.Id, manifest.ContractVersion, compiledContract);
            }
            LogLoaded(manifest.Id, manifest.Version, components.Count, folder);
            return new PluginDescriptor
            {
                Id = manifest.Id,
                Version = manifest.Version,
                ContractVersion = compiledContract,
                Description = manifest.Description,
                Source = folder,
                Status = PluginStatus.Loaded,
                AssemblySha256 = Sha256Of(assemblyPath),
                Components = components,
                Lifetime = lifetime,
            };
        }
        catch (PluginLoadException ex)
        {
            LogRefused(manifest?.Id ?? expectedId ?? path, ex.Status, ex.Message);
            return Refused(path, expectedId, manifest, ex.Status, ex.Message) with { Failure = ex.InnerException?.ToString() };
        }
    }

    private static PluginManifest ReadManifest(string path, string folder)
    {
        if (!Directory.Exists(folder) || (!Directory.Exists(path) && !File.Exists(path)))
        {
            throw new PluginLoadException(PluginStatus.NotFound, $"{path} does not exist");
        }
        var manifestPath = Path.Combine(folder, PluginContract.ManifestFileName);
        if (!File.Exists(manifestPath))
        {
            throw new PluginLoadException(PluginStatus.InvalidManifest, $"no {PluginContract.ManifestFileName} in {folder}");
        }
        var manifest = PluginManifest.Read(manifestPath);
        if (File.Exists(path) && !string.Equals(Path.GetFileName(path), manifest.Assembly, StringComparison.Ordinal))
        {
            throw new PluginLoadException(PluginStatus.InvalidManifest, $"plugins.json points at {Path.GetFileName(path)} but {manifestPath} names {manifest.Assembly}");
        }
        return manifest;
    }

    /// <summary>Accepts a plugin when the major versions are equal and its minor version is not newer than the host's.</summary>
    internal static void CheckContractVersion(string declared, string what)
    {
        if (!System.Version.TryParse(declared.Contains('.', StringComparison.Ordinal) ? declared : declared + ".0", out var version))
        {
            throw new PluginLoadException(PluginStatus.InvalidManifest, $"{what} version '{declared}', which is not a version number");
        }
        if (version.Major != PluginContract.Major || version.Minor > PluginContract.Minor)
        {
            throw new PluginLoadException(
                PluginStatus.Incompatible,
                $"{what} {version.Major}.{version.Minor}; this host supports contract {PluginContract.Major}.0 to {PluginContract.Version}");
        }
    }

    private static void CheckIsManagedAssembly(string assemblyPath)
    {
        try
        {
            AssemblyName.GetAssemblyName(assemblyPath);
        }
        catch (BadImageFormatException)
        {
            throw new PluginLoadException(PluginStatus.NotAPlugin, $"{assemblyPath} is not a .NET assembly");
        }
    }

    private static bool SameContract(string declared, string compiled) =>
        System.Version.TryParse(declared.Contains('.', StringComparison.Ordinal) ? declared : declared + ".0", out var a)
        && System.Version.TryParse(compiled, out var b) && a.Major == b.Major && a.Minor == b.Minor;

    private (List<PluginComponent> Components, PluginLifetime Lifetime, string CompiledContract) CreateComponents(PluginManifest manifest, string folder, string assemblyPath, IReadOnlyDictionary<string, string> settings)
    {
        // The load context is collectible: when the plugin goes out of use (the host stops, or a newer version of the
        // same id supersedes it) its components are disposed and then its assemblies unloaded. Any refusal below
        // unloads it at once, so a broken plugin leaves nothing loaded behind.
        var loader = PluginLoader_Create(assemblyPath);
        try
        {
            var (components, provider, compiledContract) = CreateComponents(manifest, folder, assemblyPath, settings, loader);
            return (components, new PluginLifetime(provider, loader), compiledContract);
        }
        catch
        {
            loader.Dispose();
            throw;
        }
    }

    private (List<PluginComponent> Components, ServiceProvider Provider, string CompiledContract) CreateComponents(
        PluginManifest manifest, string folder, string assemblyPath, IReadOnlyDictionary<string, string> settings, McMaster.NETCore.Plugins.PluginLoader loader)
    {
        Assembly assembly;
        try
        {
            assembly = loader.LoadDefaultAssembly();
        }
        catch (Exception ex) when (ex is BadImageFormatException or FileLoadException or FileNotFoundException)
        {
            throw new PluginLoadException(PluginStatus.NotAPlugin, $"cannot load {assemblyPath}: {ex.Message}", ex);
        }

        var contractReference = assembly.GetReferencedAssemblies()
            .FirstOrDefault(a => a.Name == typeof(IPluginConfigurator).Assembly.GetName().Name);
        if (contractReference?.Version is null)
        {
            throw new PluginLoadException(PluginStatus.NotAPlugin, $"{Path.GetFileName(assemblyPath)} does not reference SensMerging.Abstractions");
        }
        var compiledContract = $"{contractReference.Version.Major}.{contractReference.Version.Minor}";
        CheckContractVersion(compiledContract, "it was compiled against contract");

        var configurator = CreateConfigurator(manifest, assembly);
        var services = new ServiceCollection();
        services.AddSingleton(_loggerFactory);
        services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        var context = new PluginContext(manifest.Id, folder, settings);
        services.AddSingleton(context);
        try
        {
            configurator.ConfigureServices(services, context);
        }
        catch (Exception ex)
        {
            throw new PluginLoadException(PluginStatus.Malfunctioned, $"its configurator {configurator.GetType().FullName} threw {ex.GetType().Name}: {ex.Message}", ex);
        }

        var components = new List<PluginComponent>();
        ServiceProvider? provider = null;
        try
        {
            // The provider lives as long as the host (components are singletons used for the whole run); the catalog
            // disposes it when the host stops, and it disposes the components.
            provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
            components.AddRange(provider.GetServices<IMergeStrategy>().Select(s => new PluginComponent(ComponentKind.Strategy, s)));
            components.AddRange(provider.GetServices<IScorer>().Select(s => new PluginComponent(ComponentKind.Scorer, s)));
            components.AddRange(provider.GetServices<IStrategyDecorator>().Select(s => new PluginComponent(ComponentKind.Decorator, s)));
        }
        catch (Exception ex)
        {
            provider?.Dispose();
            var root = ex is TargetInvocationException { InnerException: { } inner } ? inner : ex;
            throw new PluginLoadException(PluginStatus.Malfunctioned, $"creating its components failed: {root.GetType().Name}: {root.Message}", ex);
        }
        try
        {
            if (components.Count == 0)
            {
                throw new PluginLoadException(PluginStatus.NotAPlugin, "its configurator registered no strategy, scorer or decorator");
            }
            foreach (var component in components)
            {
                ValidateComponent(component);
            }
        }
        catch
        {
            provider.Dispose();
            throw;
        }
        return (components, provider, compiledContract);
    }

    private static McMaster.NETCore.Plugins.PluginLoader PluginLoader_Create(string assemblyPath) =>
        McMaster.NETCore.Plugins.PluginLoader.CreateFromAssemblyFile(assemblyPath, config =>
        {
            config.PreferSharedTypes = true;
            config.IsUnloadable = true;
            foreach (var shared in SharedAssemblies)
            {
                config.SharedAssemblies.Add(shared);
            }
        });

    private static List<AssemblyName> ContractClosure()
    {
        var contract = typeof(IPluginConfigurator).Assembly;
        var shared = new List<AssemblyName> { contract.GetName() };
        shared.AddRange(contract.GetReferencedAssemblies().Where(a => !IsFramework(a)));
        return shared;
    }

    private static bool IsFramework(AssemblyName assembly)
    {
        var name = assembly.Name ?? string.Empty;
        return name is "netstandard" or "mscorlib" or "Microsoft.CSharp" || name.StartsWith("System", StringComparison.Ordinal)
            || name.StartsWith("Microsoft.Win32", StringComparison.Ordinal);
    }

    private static IPluginConfigurator CreateConfigurator(PluginManifest manifest, Assembly assembly)
    {
        Type[] types;
        try
        {
            types = assembly.GetExportedTypes();
        }
        catch (Exception ex) when (ex is ReflectionTypeLoadException or FileNotFoundException or FileLoadException)
        {
            throw new PluginLoadException(PluginStatus.NotAPlugin, $"its types cannot be loaded: {ex.Message}", ex);
        }
        Type type;
        if (!string.IsNullOrWhiteSpace(manifest.Configurator))
        {
            type = types.FirstOrDefault(t => t.FullName == manifest.Configurator)
                ?? throw new PluginLoadException(PluginStatus.InvalidManifest, $"configurator type '{manifest.Configurator}' named in plugin.json is not a public type of {assembly.GetName().Name}");
            if (!typeof(IPluginConfigurator).IsAssignableFrom(type))
            {
                throw new PluginLoadException(PluginStatus.NotAPlugin, $"'{manifest.Configurator}' does not implement {nameof(IPluginConfigurator)}");
            }
        }
        else
        {
            var candidates = types.Where(t => t is { IsClass: true, IsAbstract: false } && typeof(IPluginConfigurator).IsAssignableFrom(t)).ToList();
            type = candidates.Count switch
            {
                0 => throw new PluginLoadException(PluginStatus.NotAPlugin, $"{assembly.GetName().Name} has no public {nameof(IPluginConfigurator)} implementation"),
                1 => candidates[0],
                _ => throw new PluginLoadException(PluginStatus.InvalidManifest, $"{assembly.GetName().Name} has {candidates.Count} configurators ({string.Join(", ", candidates.Select(c => c.FullName))}): name one in plugin.json"),
            };
        }
        try
        {
            return (IPluginConfigurator)(Activator.CreateInstance(type)
                ?? throw new PluginLoadException(PluginStatus.Malfunctioned, $"could not create {type.FullName}"));
        }
        catch (Exception ex) when (ex is TargetInvocationException or MissingMethodException or MemberAccessException)
        {
            var root = ex.InnerException ?? ex;
            throw new PluginLoadException(PluginStatus.Malfunctioned, $"its configurator {type.FullName} could not be created: {root.GetType().Name}: {root.Message}", ex);
        }
    }

    private static void ValidateComponent(PluginComponent component)
    {
        var name = component.Instance.Name;
        if (string.IsNullOrWhiteSpace(name) || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.')))
        {
            throw new PluginLoadException(PluginStatus.Malfunctioned, $"{component.Kind} {component.Instance.GetType().FullName} has an invalid name '{name}' (letters, digits, '_', '-', '.')");
        }
        var duplicates = component.Instance.Parameters.GroupBy(p => p.Name, StringComparer.Ordinal).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        if (duplicates.Count > 0)
        {
            throw new PluginLoadException(PluginStatus.Malfunctioned, $"{component.Kind} '{name}' declares parameter(s) {string.Join(", ", duplicates)} twice");
        }
    }

    private static PluginDescriptor Refused(string path, string? expectedId, PluginManifest? manifest, PluginStatus status, string reason) => new()
    {
        Id = manifest?.Id ?? expectedId ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(path)),
        Version = manifest?.Version,
        ContractVersion = manifest?.ContractVersion,
        Description = manifest?.Description,
        Source = path,
        Status = status,
        Reason = reason,
    };

    internal static string Sha256Of(string file)
    {
        using var stream = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Debug, Message = "Loaded plugin {PluginId} {Version} with {ComponentCount} component(s) from {Folder}")]
    private partial void LogLoaded(string pluginId, string version, int componentCount, string folder);

    [LoggerMessage(EventId = 102, Level = LogLevel.Warning,
        Message = "Plugin {PluginId}: plugin.json declares contract {Declared} but its assembly was compiled against {Compiled}; listing {Compiled} (rebuild the plugin or fix plugin.json)")]
    private partial void LogContractMismatch(string pluginId, string declared, string compiled);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "Plugin {PluginId} not loaded ({Status}): {Reason}")]
    private partial void LogRefused(string pluginId, PluginStatus status, string reason);
}

using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Host.Plugins;
using TorchSharp;

namespace SensMerging.Host.Tests.Plugins;

public sealed class PluginCatalogTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("plugins");
    private readonly PluginLoader _loader = new(NullLoggerFactory.Instance);

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A copy of the test plugin's folder with a manifest of our choosing.</summary>
    private string TestPlugin(string folder, string id, string configurator, string contract = PluginContract.Version, string? assembly = null, string version = "0.3.0")
    {
        var dir = Path.Combine(_root, folder);
        TestPaths.CopyDirectory(TestPaths.TestPluginFolder, dir);
        var manifest = new Dictionary<string, string>
        {
            ["id"] = id,
            ["version"] = version,
            ["contractVersion"] = contract,
            ["assembly"] = assembly ?? "SensMerging.TestPlugins.dll",
            ["configurator"] = configurator,
        };
        File.WriteAllText(Path.Combine(dir, PluginContract.ManifestFileName), JsonSerializer.Serialize(manifest));
        return dir;
    }

    private static PluginEntry Entry(string path, string? id = null, IReadOnlyDictionary<string, string>? settings = null) =>
        new() { Path = path, Id = id, Settings = settings ?? new Dictionary<string, string>() };

    [Fact]
    public void Good_plugin_runs_a_TorchSharp_strategy_across_the_plugin_boundary()
    {
        var dir = TestPlugin("good", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator");
        var catalog = PluginCatalog.Load([Entry(dir, "test-scale", new Dictionary<string, string> { ["factor"] = "3" })], _root, _loader);

        var plugin = Assert.Single(catalog.Plugins);
        Assert.Equal(PluginStatus.Loaded, plugin.Status);
        Assert.Null(plugin.Reason);
        Assert.Equal(64, plugin.AssemblySha256!.Length);
        var strategy = catalog.GetStrategy("test_scale");
        // The plugin's IMergeStrategy is the host's type: one type identity across load contexts.
        Assert.Same(typeof(IMergeStrategy).Assembly, strategy.GetType().GetInterfaces().Single(i => i.Name == nameof(IMergeStrategy)).Assembly);

        using var a = torch.tensor(new float[] { 1, 2, 3 });
        using var b = torch.tensor(new float[] { 10, 20, 30 });
        using var output = torch.empty(3);
        strategy.Merge(new MergeTensorRequest
        {
            TensorName = "model.layers.0.mlp.up_proj.weight",
            LayerGroup = "model.layers.0",
            Models = [a, b],
            ModelNames = ["a", "b"],
            Weights = [1.0, 0.5],
            Parameters = ResolvedParameters.Empty,
            Output = output,
            Scratch = new NoScratch(),
        });
        Assert.Equal(new float[] { 18, 36, 54 }, output.data<float>().ToArray()); // 3 * (a + 0.5 b)
    }

    [Fact]
    public void Missing_folder_and_missing_assembly_are_NotFound()
    {
        var noAssembly = TestPlugin("noasm", "noasm", "SensMerging.TestPlugins.ScaleConfigurator", assembly: "Absent.dll");
        var catalog = PluginCatalog.Load([Entry(Path.Combine(_root, "does-not-exist")), Entry(noAssembly)], _root, _loader);

        Assert.All(catalog.Plugins, p => Assert.Equal(PluginStatus.NotFound, p.Status));
        Assert.Contains("does not exist", catalog.Plugins[0].Reason, StringComparison.Ordinal);
        Assert.Contains("Absent.dll", catalog.Plugins[1].Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Folder_without_manifest_is_InvalidManifest()
    {
        var dir = Path.Combine(_root, "bare");
        Directory.CreateDirectory(dir);
        var catalog = PluginCatalog.Load([Entry(dir)], _root, _loader);
        var p = Assert.Single(catalog.Plugins);
        Assert.Equal(PluginStatus.InvalidManifest, p.Status);
        Assert.Contains("plugin.json", p.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Assemblies_that_are_not_plugins_are_NotAPlugin()
    {
        // Not .NET at all.
        var garbage = TestPlugin("garbage", "garbage", "", assembly: "garbage.dll");
        File.WriteAllBytes(Path.Combine(garbage, "garbage.dll"), [0x7f, (byte)'E', (byte)'L', (byte)'F', 1, 2, 3, 4]);
        // A .NET assembly that does not reference the contract.
        var foreign = TestPlugin("foreign", "foreign", "", assembly: "McMaster.NETCore.Plugins.dll");
        File.Copy(Path.Combine(AppContext.BaseDirectory, "McMaster.NETCore.Plugins.dll"), Path.Combine(foreign, "McMaster.NETCore.Plugins.dll"));
        // A plugin assembly whose configurator registers nothing.
        var empty = TestPlugin("empty", "empty", "SensMerging.TestPlugins.EmptyConfigurator");

        var catalog = PluginCatalog.Load([Entry(garbage), Entry(foreign), Entry(empty)], _root, _loader);

        Assert.All(catalog.Plugins, p => Assert.Equal(PluginStatus.NotAPlugin, p.Status));
        Assert.Contains("not a .NET assembly", catalog.Plugins[0].Reason, StringComparison.Ordinal);
        Assert.Contains("does not reference SensMerging.Abstractions", catalog.Plugins[1].Reason, StringComparison.Ordinal);
        Assert.Contains("registered no", catalog.Plugins[2].Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("2.0")]
    [InlineData("0.9")]
    [InlineData("1.7")]
    public void Plugin_for_another_contract_version_is_Incompatible(string contract)
    {
        var dir = TestPlugin("other", "other", "SensMerging.TestPlugins.ScaleConfigurator", contract: contract);
        var p = Assert.Single(PluginCatalog.Load([Entry(dir)], _root, _loader).Plugins);
        Assert.Equal(PluginStatus.Incompatible, p.Status);
        Assert.Contains(contract, p.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Plugin_whose_manifest_understates_its_contract_loads_and_is_listed_with_the_contract_it_was_compiled_against()
    {
        // The test plugin is compiled against this host's contract; its plugin.json claims 1.0.
        var dir = TestPlugin("older", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", contract: "1.0");
        var p = Assert.Single(PluginCatalog.Load([Entry(dir)], _root, _loader).Plugins);
        Assert.Equal(PluginStatus.Loaded, p.Status);
        Assert.Equal(PluginContract.Version, p.ContractVersion);
    }

    [Theory]
    [InlineData("SensMerging.TestPlugins.ThrowingConfigurator", "configurator failed on purpose")]
    [InlineData("SensMerging.TestPlugins.ThrowingConstructorConfigurator", "constructor failed on purpose")]
    [InlineData("SensMerging.TestPlugins.ThrowingComponentConfigurator", "strategy constructor failed on purpose")]
    public void Throwing_configurators_and_components_are_Malfunctioned_and_the_good_plugin_still_works(string configurator, string message)
    {
        var bad = TestPlugin("bad", "bad", configurator);
        var good = TestPlugin("good", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator");
        var catalog = PluginCatalog.Load([Entry(bad), Entry(good)], _root, _loader);

        Assert.Equal(PluginStatus.Malfunctioned, catalog.Plugins[0].Status);
        Assert.Contains(message, catalog.Plugins[0].Reason, StringComparison.Ordinal);
        Assert.Equal(PluginStatus.Loaded, catalog.Plugins[1].Status);
        Assert.Equal("test_scale", catalog.GetStrategy("test_scale").Name);
    }

    [Fact]
    public void Second_plugin_claiming_a_component_name_is_Conflict_and_an_equal_version_of_an_id_is_Superseded()
    {
        var first = TestPlugin("first", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator");
        var sameId = TestPlugin("same-id", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator");
        var sameName = TestPlugin("same-name", "another-id", "SensMerging.TestPlugins.ScaleConfigurator");
        var catalog = PluginCatalog.Load([Entry(first), Entry(sameId), Entry(sameName)], _root, _loader);

        Assert.Equal(PluginStatus.Loaded, catalog.Plugins[0].Status);
        Assert.Equal(PluginStatus.Superseded, catalog.Plugins[1].Status);
        Assert.Contains($"version 0.3.0 at {first} is used", catalog.Plugins[1].Reason, StringComparison.Ordinal);
        Assert.Empty(catalog.Plugins[1].Components);
        Assert.Equal(PluginStatus.Conflict, catalog.Plugins[2].Status);
        Assert.Contains("'test_scale' is already provided", catalog.Plugins[2].Reason, StringComparison.Ordinal);
        Assert.Equal(first, catalog.PluginOf(ComponentKind.Strategy, "test_scale").Source);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_duplicate_id_keeps_the_newest_version_wherever_it_is_listed(bool newestFirst)
    {
        var older = TestPlugin("older", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.9.2");
        var newer = TestPlugin("newer", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.10.0");
        var catalog = PluginCatalog.Load(newestFirst ? [Entry(newer), Entry(older)] : [Entry(older), Entry(newer)], _root, _loader);

        var olderPlugin = Assert.Single(catalog.Plugins, p => p.Source == older);
        var newerPlugin = Assert.Single(catalog.Plugins, p => p.Source == newer);
        Assert.Equal(PluginStatus.Superseded, olderPlugin.Status);
        Assert.Contains("version 1.10.0", olderPlugin.Reason, StringComparison.Ordinal);
        Assert.Empty(olderPlugin.Components);
        Assert.Equal(PluginStatus.Loaded, newerPlugin.Status);
        Assert.Equal(newer, catalog.PluginOf(ComponentKind.Strategy, "test_scale").Source);
        Assert.Equal("test_scale", catalog.GetStrategy("test_scale").Name);
    }

    [Fact]
    public void A_newer_version_is_no_conflict_with_the_names_of_the_version_it_replaces()
    {
        var older = TestPlugin("older", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.0.0");
        var other = TestPlugin("other", "another-id", "SensMerging.TestPlugins.ScaleConfigurator");
        var newer = TestPlugin("newer", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "2.0.0");
        var catalog = PluginCatalog.Load([Entry(older), Entry(other), Entry(newer)], _root, _loader);

        Assert.Equal(PluginStatus.Superseded, catalog.Plugins[0].Status);
        Assert.Equal(PluginStatus.Conflict, catalog.Plugins[1].Status);
        Assert.Equal(PluginStatus.Loaded, catalog.Plugins[2].Status);
        Assert.Equal(newer, catalog.PluginOf(ComponentKind.Strategy, "test_scale").Source);
    }

    [Fact]
    public void Components_are_disposed_when_the_catalog_is_and_a_superseded_plugin_at_once()
    {
        var older = TestPlugin("older", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.0.0");
        var newer = TestPlugin("newer", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.1.0");
        var olderMarker = Path.Combine(_root, "older.disposed");
        var newerMarker = Path.Combine(_root, "newer.disposed");
        var catalog = PluginCatalog.Load(
            [Entry(older, settings: new Dictionary<string, string> { ["disposedMarker"] = olderMarker }),
             Entry(newer, settings: new Dictionary<string, string> { ["disposedMarker"] = newerMarker })],
            _root, _loader);

        Assert.Equal("disposed\n", File.ReadAllText(olderMarker));
        Assert.False(File.Exists(newerMarker));

        catalog.Dispose();

        Assert.Equal("disposed\n", File.ReadAllText(newerMarker));
        Assert.Equal("disposed\n", File.ReadAllText(olderMarker));
    }

    [Fact]
    public void Plugin_assemblies_are_unloaded_when_superseded_and_when_the_catalog_is_disposed()
    {
        var older = TestPlugin("older", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.0.0");
        var newer = TestPlugin("newer", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator", version: "1.1.0");
        // Only weak references and this holder leave the helpers, so no stack slot here keeps a plugin type alive.
        var holder = new PluginCatalog?[1];
        var (olderContext, newerContext) = LoadBothVersions(holder, older, newer);

        // The superseded version goes out of use at once; the one in use stays loaded while the catalog lives.
        Assert.True(Collected(olderContext), "the superseded plugin's load context was not unloaded");
        Assert.True(StrategyComesFrom(holder, newerContext), "the strategy in use is not the newer version's");

        DisposeAndDrop(holder);
        Assert.True(Collected(newerContext), "the plugin's load context was not unloaded after the catalog was disposed");
    }

    [Fact]
    public void A_refused_plugin_leaves_no_assembly_loaded()
    {
        var dir = TestPlugin("throws", "test-throws", "SensMerging.TestPlugins.ThrowingConfigurator");
        var context = LoadRefusedAndWatchContext(dir);
        Assert.True(Collected(context), "a refused plugin's load context was not unloaded");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private (WeakReference Older, WeakReference Newer) LoadBothVersions(PluginCatalog?[] holder, string older, string newer)
    {
        var (catalog, contexts) = LoadWatchingContexts([Entry(older), Entry(newer)]);
        holder[0] = catalog;
        return (new WeakReference(contexts[older]), new WeakReference(contexts[newer]));
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static bool StrategyComesFrom(PluginCatalog?[] holder, WeakReference context) =>
        context.IsAlive && ReferenceEquals(context.Target, System.Runtime.Loader.AssemblyLoadContext.GetLoadContext(holder[0]!.GetStrategy("test_scale").GetType().Assembly));

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void DisposeAndDrop(PluginCatalog?[] holder)
    {
        holder[0]!.Dispose();
        holder[0] = null;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private WeakReference LoadRefusedAndWatchContext(string dir)
    {
        var (catalog, contexts) = LoadWatchingContexts([Entry(dir)]);
        Assert.Equal(PluginStatus.Malfunctioned, catalog.Plugins[0].Status);
        return new WeakReference(contexts[dir]);
    }

    /// <summary>Loads a catalog and notes, per plugin folder, the (collectible) load context its assembly was loaded into.</summary>
    private (PluginCatalog Catalog, Dictionary<string, System.Runtime.Loader.AssemblyLoadContext> Contexts) LoadWatchingContexts(PluginEntry[] entries)
    {
        var contexts = new Dictionary<string, System.Runtime.Loader.AssemblyLoadContext>(StringComparer.Ordinal);
        void Note(object? sender, AssemblyLoadEventArgs e)
        {
            var folder = e.LoadedAssembly.IsDynamic ? null : Path.GetDirectoryName(e.LoadedAssembly.Location);
            if (folder is not null && entries.Any(entry => entry.Path == folder))
            {
                lock (contexts)
                {
                    contexts[folder] = System.Runtime.Loader.AssemblyLoadContext.GetLoadContext(e.LoadedAssembly)!;
                }
            }
        }
        AppDomain.CurrentDomain.AssemblyLoad += Note;
        try
        {
            var catalog = PluginCatalog.Load(entries, _root, _loader);
            Assert.Equal(entries.Length, contexts.Count);
            Assert.All(contexts.Values, c => Assert.True(c.IsCollectible));
            return (catalog, contexts);
        }
        finally
        {
            AppDomain.CurrentDomain.AssemblyLoad -= Note;
        }
    }

    private static bool Collected(WeakReference context)
    {
        for (var i = 0; i < 20 && context.IsAlive; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        return !context.IsAlive;
    }

    [Fact]
    public void Id_in_plugins_json_must_match_the_manifest_and_disabled_plugins_are_listed()
    {
        var dir = TestPlugin("p", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator");
        var catalog = PluginCatalog.Load(
            [Entry(dir, "wrong-id"), new PluginEntry { Path = dir, Id = "off", Enabled = false }], _root, _loader);
        Assert.Equal(PluginStatus.InvalidManifest, catalog.Plugins[0].Status);
        Assert.Contains("wrong-id", catalog.Plugins[0].Reason, StringComparison.Ordinal);
        Assert.Equal(PluginStatus.Disabled, catalog.Plugins[1].Status);
    }

    [Fact]
    public void Unknown_strategy_error_names_what_is_available_and_what_was_refused()
    {
        var good = TestPlugin("good", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator");
        var bad = TestPlugin("bad", "bad", "SensMerging.TestPlugins.ThrowingConfigurator");
        var catalog = PluginCatalog.Load([Entry(good), Entry(bad)], _root, _loader);
        var ex = Assert.Throws<KeyNotFoundException>(() => catalog.GetStrategy("tiez"));
        Assert.Contains("'tiez'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("test_scale", ex.Message, StringComparison.Ordinal);
        Assert.Contains("bad (Malfunctioned", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Search_paths_discover_dropped_in_plugin_folders()
    {
        var dropIn = Path.Combine(_root, "plugins.d");
        Directory.CreateDirectory(dropIn);
        TestPaths.CopyDirectory(TestPlugin("staging", "test-scale", "SensMerging.TestPlugins.ScaleConfigurator"), Path.Combine(dropIn, "scale"));
        var file = Path.Combine(_root, "plugins.json");
        File.WriteAllText(file, """{ "searchPaths": ["plugins.d"], "plugins": [] }""");

        var catalog = PluginCatalog.Load(file, _loader, NullLogger.Instance);

        var p = Assert.Single(catalog.Plugins);
        Assert.Equal(PluginStatus.Loaded, p.Status);
        Assert.Equal(Path.Combine(dropIn, "scale"), p.Source);
    }

    private sealed class NoScratch : ITensorScratch
    {
        public torch.Tensor Rent(torch.ScalarType dtype = torch.ScalarType.Float32) => throw new NotSupportedException();

        public torch.Tensor Rent(long[] shape, torch.ScalarType dtype = torch.ScalarType.Float32) => throw new NotSupportedException();
    }
}

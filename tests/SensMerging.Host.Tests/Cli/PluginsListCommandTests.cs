using System.Text.Json;

namespace SensMerging.Host.Tests.Cli;

public sealed class PluginsListCommandTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("plugins-cli");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task Json_output_is_valid_and_lists_good_and_bad_plugins_with_reasons()
    {
        File.WriteAllText(Path.Combine(_root, "plugins.json"), JsonSerializer.Serialize(new
        {
            plugins = new object[]
            {
                new { id = "linear", path = TestPaths.PluginFolder("SensMerging.Strategies.Linear") },
                new { id = "ghost", path = "missing-folder" },
                new { id = "sens", path = TestPaths.PluginFolder("SensMerging.Decorators.Sens") },
            },
        }));

        var (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "list", "--json", "--plugins", Path.Combine(_root, "plugins.json"));

        Assert.True(exit == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var plugins = doc.RootElement.GetProperty("plugins").EnumerateArray().ToList();
        Assert.Equal(3, plugins.Count);
        var linear = plugins[0];
        Assert.Equal("linear", linear.GetProperty("id").GetString());
        Assert.Equal("Loaded", linear.GetProperty("status").GetString());
        Assert.Equal("strategy", linear.GetProperty("kinds")[0].GetString());
        var parameters = linear.GetProperty("components")[0].GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()).ToList();
        Assert.Contains("normalize", parameters);
        var ghost = plugins[1];
        Assert.Equal("NotFound", ghost.GetProperty("status").GetString());
        Assert.Contains("missing-folder", ghost.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Equal(SensMerging.Abstractions.PluginContract.Version, doc.RootElement.GetProperty("hostContractVersion").GetString());
        // A decorator's parameter that may vary by layer group says so (contract 1.6); a strategy's per-model one says per-model.
        var scopes = plugins[2].GetProperty("components")[0].GetProperty("parameters").EnumerateArray()
            .ToDictionary(p => p.GetProperty("name").GetString()!, p => p.GetProperty("scope").GetString());
        Assert.Equal("per-layer-group", scopes["temperature"]);
        Assert.Equal("global", scopes["task_scorer"]);
        Assert.Equal("per-model", linear.GetProperty("components")[0].GetProperty("parameters").EnumerateArray()
            .Single(p => p.GetProperty("name").GetString() == "weight").GetProperty("scope").GetString());
    }

    [Fact]
    public async Task Table_output_names_each_plugin_and_its_status()
    {
        File.WriteAllText(Path.Combine(_root, "plugins.json"), JsonSerializer.Serialize(new
        {
            plugins = new object[] { new { id = "ghost", path = "missing-folder" } },
        }));
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "list", "--plugins", Path.Combine(_root, "plugins.json"));
        Assert.True(exit == 0, stderr);
        Assert.Contains("ghost", stdout, StringComparison.Ordinal);
        Assert.Contains("NotFound", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Verbose_table_shows_the_stack_trace_of_a_malfunctioning_plugin()
    {
        var bad = Path.Combine(_root, "bad");
        TestPaths.CopyDirectory(TestPaths.TestPluginFolder, bad);
        File.WriteAllText(Path.Combine(bad, SensMerging.Abstractions.PluginContract.ManifestFileName), JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["id"] = "bad",
            ["version"] = "0.1.0",
            ["contractVersion"] = SensMerging.Abstractions.PluginContract.Version,
            ["assembly"] = "SensMerging.TestPlugins.dll",
            ["configurator"] = "SensMerging.TestPlugins.ThrowingConstructorConfigurator",
        }));
        var file = Path.Combine(_root, "plugins.json");
        File.WriteAllText(file, JsonSerializer.Serialize(new { plugins = new object[] { new { id = "bad", path = bad } } }));

        var (plainExit, plain, plainErr) = await Processes.SensMergeAsync("plugins", "list", "--plugins", file);
        var (exit, verbose, stderr) = await Processes.SensMergeAsync("plugins", "list", "-v", "--plugins", file);

        Assert.True(plainExit == 0, plainErr);
        Assert.True(exit == 0, stderr);
        Assert.Contains("bad", plain, StringComparison.Ordinal);
        Assert.DoesNotContain("   at SensMerging.TestPlugins.", plain, StringComparison.Ordinal);
        Assert.Contains("bad (Malfunctioned) at", verbose, StringComparison.Ordinal);
        Assert.Contains("constructor failed on purpose", verbose, StringComparison.Ordinal);
        Assert.Contains("   at SensMerging.TestPlugins.", verbose, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Malformed_plugins_file_is_a_clear_error()
    {
        var file = Path.Combine(_root, "plugins.json");
        File.WriteAllText(file, "{ \"plugins\": [ oops");
        var (exit, _, stderr) = await Processes.SensMergeAsync("plugins", "list", "--plugins", file);
        Assert.Equal(1, exit);
        Assert.Contains("not a valid plugins file", stderr, StringComparison.Ordinal);
    }
}

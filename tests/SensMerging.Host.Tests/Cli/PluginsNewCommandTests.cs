using SensMerging.Host.Plugins;

namespace SensMerging.Host.Tests.Cli;

/// <summary><c>sensmerge plugins new</c>'s refusals: each one clear, and nothing written.</summary>
public sealed class PluginsNewCommandTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("plugins-new");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task An_unknown_kind_is_refused_naming_the_kinds_there_are()
    {
        var output = Path.Combine(_root, "x");
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("plugins", "new", "evaluator", "AcmeX", "--out", output);

        Assert.Equal(1, exit);
        Assert.Contains("unknown plugin kind 'evaluator'; the kinds are strategy, streaming-strategy, scorer, decorator", stderr, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public async Task An_existing_non_empty_folder_is_refused_and_left_as_it_was()
    {
        var output = Path.Combine(_root, "busy");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "notes.txt"), "mine");

        var (exit, _, stderr) = await Processes.SensMergeAsync("plugins", "new", "scorer", "AcmeScorer", "--out", output);

        Assert.Equal(1, exit);
        Assert.Contains($"{output} exists and is not empty", stderr, StringComparison.Ordinal);
        Assert.Equal(["notes.txt"], Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName));
    }

    [Fact]
    public async Task A_name_that_is_not_a_csharp_name_is_refused()
    {
        var (exit, _, stderr) = await Processes.SensMergeAsync("plugins", "new", "strategy", "acme-median", "--out", Path.Combine(_root, "m"));

        Assert.Equal(1, exit);
        Assert.Contains("plugin name 'acme-median' is not a C# name", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("AcmeMedian", "acme_median", "acme-median")]
    [InlineData("Acme.TrimmedMean2", "acme_trimmed_mean2", "acme-trimmed-mean2")]
    [InlineData("NLLScore", "nllscore", "nllscore")]
    public void Component_name_and_plugin_id_are_the_name_in_snake_and_kebab_case(string name, string component, string id)
    {
        Assert.Equal(component, PluginTemplates.DerivedName(name));
        Assert.Equal(id, PluginTemplates.DerivedName(name, "-"));
    }
}

using System.Text.Json;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using SensMerging.Host.Plugins;

namespace SensMerging.Host.Tests.Plugins;

/// <summary>
/// The four templates in docs/plugin-templates stay consistent with each other, with <c>sensmerge plugins new</c> and with
/// the repository's package versions (cheap checks; <see cref="PluginTemplateTests"/> builds and runs them).
/// </summary>
public sealed class PluginTemplateFilesTests
{
    private static readonly string Templates = Path.Combine(TestPaths.RepoRoot, "docs", "plugin-templates");

    [Fact]
    public void Every_kind_of_plugins_new_has_a_template_with_its_short_name_and_the_same_symbols()
    {
        Assert.Equal(
            PluginTemplates.Kinds.Select(k => k.Folder).Order(StringComparer.Ordinal),
            Directory.GetDirectories(Templates).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        string? symbols = null;
        foreach (var kind in PluginTemplates.Kinds)
        {
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(Templates, kind.Folder, ".template.config", "template.json")));
            Assert.Equal(kind.ShortName, json.RootElement.GetProperty("shortName").GetString());
            var these = JsonSerializer.Serialize(json.RootElement.GetProperty("symbols")) + JsonSerializer.Serialize(json.RootElement.GetProperty("forms"));
            Assert.Equal(symbols ?? these, these);
            symbols = these;
        }
    }

    [Theory]
    [InlineData("nuget.config")]
    [InlineData("Directory.Build.props")]
    [InlineData("Directory.Packages.props")]
    [InlineData(".editorconfig")]
    public void Shared_files_are_the_same_in_every_template(string file)
    {
        var first = File.ReadAllText(Path.Combine(Templates, PluginTemplates.Kinds[0].Folder, file));
        foreach (var kind in PluginTemplates.Kinds.Skip(1))
        {
            Assert.True(first == File.ReadAllText(Path.Combine(Templates, kind.Folder, file)), $"{kind.Folder}/{file} differs from {PluginTemplates.Kinds[0].Folder}/{file}");
        }
    }

    [Fact]
    public void Template_package_versions_are_the_repository_ones()
    {
        static Dictionary<string, string> Versions(string file) => XDocument.Load(file).Descendants("PackageVersion")
            .ToDictionary(e => (string)e.Attribute("Include")!, e => (string)e.Attribute("Version")!, StringComparer.Ordinal);
        var repository = Versions(Path.Combine(TestPaths.RepoRoot, "Directory.Packages.props"));
        var template = Versions(Path.Combine(Templates, PluginTemplates.Kinds[0].Folder, "Directory.Packages.props"));
        Assert.Equal("CONTRACT_PACKAGE_VERSION", template["SensMerging.Abstractions"]);
        foreach (var (package, version) in template.Where(p => p.Key != "SensMerging.Abstractions"))
        {
            Assert.True(repository.TryGetValue(package, out var pinned) && pinned == version, $"{package} {version} in the templates, {pinned ?? "nothing"} in the repository");
        }
        // TorchSharp-cpu's native libraries must be those of the TorchSharp the contract references.
        Assert.Equal(repository["TorchSharp"], template["TorchSharp-cpu"]);
    }

    /// <summary>
    /// The guide's worked example is the streaming-strategy template's source, copied in by scripts/plugins-guide.py:
    /// every <c>&lt;!-- include: PATH --&gt;</c> block of docs/plugins.md must be the file's text, so the docs cannot drift
    /// from the code that <see cref="PluginTemplateTests"/> builds, tests and merges with.
    /// </summary>
    [Fact]
    public void The_guides_worked_example_is_the_tested_streaming_template_file()
    {
        var docs = Path.Combine(TestPaths.RepoRoot, "docs");
        var guide = File.ReadAllText(Path.Combine(docs, "plugins.md"));
        var includes = Regex.Matches(guide, "<!-- include: (?<path>[^ ]+) -->\n(?<body>.*?)<!-- /include -->", RegexOptions.Singleline);
        Assert.Contains(includes, m => m.Groups["path"].Value == "plugin-templates/streaming-strategy/src/MyStreamingStrategy/Strategy.cs");
        foreach (Match include in includes)
        {
            var source = File.ReadAllText(Path.Combine(docs, include.Groups["path"].Value));
            Assert.True("```csharp\n" + source + "```\n" == include.Groups["body"].Value,
                $"docs/plugins.md's copy of {include.Groups["path"].Value} is stale: run /usr/bin/python3 scripts/plugins-guide.py");
        }
    }
}

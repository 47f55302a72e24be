using System.Diagnostics;
using System.Xml.Linq;

namespace SensMerging.Abstractions.Tests;

/// <summary>The contract's XML docs (shipped in the package) and the page generated from them, docs/api-reference.md.</summary>
public sealed class ApiReferenceTests
{
    private const string Regenerate = "dotnet build src/SensMerging.Abstractions -c Release && /usr/bin/python3 scripts/api-reference.py";

    /// <summary>The XML doc file beside this test's copy of the contract assembly.</summary>
    private static string XmlPath => Path.ChangeExtension(typeof(IMergeStrategy).Assembly.Location, ".xml");

    [Fact]
    public void Every_public_type_of_the_contract_has_a_summary_in_the_xml_docs()
    {
        Assert.True(File.Exists(XmlPath), $"{XmlPath} is missing: GenerateDocumentationFile must stay on in SensMerging.Abstractions.csproj");
        var summaries = XDocument.Load(XmlPath).Descendants("member")
            .ToDictionary(m => (string)m.Attribute("name")!, m => m.Element("summary")?.Value.Trim() ?? string.Empty);
        var undocumented = typeof(IMergeStrategy).Assembly.GetExportedTypes()
            .Select(t => "T:" + t.FullName!.Replace('+', '.'))
            .Where(id => string.IsNullOrEmpty(summaries.GetValueOrDefault(id)))
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.Empty(undocumented);
    }

    [Fact]
    public async Task Committed_api_reference_page_matches_the_xml_docs()
    {
        var root = FindRepoRoot();
        var page = Path.Combine(root, "docs", "api-reference.md");
        Assert.True(File.Exists(page), $"{page} is missing; generate it with: {Regenerate}");

        var start = new ProcessStartInfo("/usr/bin/python3")
        {
            WorkingDirectory = root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { Path.Combine(root, "scripts", "api-reference.py"), "--stdout", "--xml", XmlPath })
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        var generated = await stdout;
        Assert.True(process.ExitCode == 0, $"scripts/api-reference.py failed ({process.ExitCode}): {await stderr}");

        var committed = await File.ReadAllTextAsync(page);
        Assert.True(committed == generated,
            $"docs/api-reference.md is stale (it differs from the contract's XML docs); regenerate it with: {Regenerate}");
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SensMerging.Host.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("cannot find the repository root (SensMerging.Host.sln) above " + AppContext.BaseDirectory);
    }
}

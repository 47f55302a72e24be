using System.Xml.Linq;
using SensMerging.Host.Plugins;

namespace SensMerging.Host.Tests.Plugins;

public sealed class SharedAssembliesTests
{
    [Fact]
    public void The_host_shares_the_contract_and_its_dependencies_and_the_build_keeps_them_out_of_plugin_folders()
    {
        var shared = PluginLoader.SharedAssemblies.Select(a => a.Name!).ToList();
        Assert.Contains("SensMerging.Abstractions", shared);
        Assert.Contains("TorchSharp", shared);
        Assert.Contains("Microsoft.Extensions.DependencyInjection.Abstractions", shared);
        Assert.DoesNotContain(shared, n => n.StartsWith("System", StringComparison.Ordinal));

        // The contract's build targets drop shared packages from plugin folders by NuGet package id (exact or prefix);
        // every assembly the host shares must be covered, or a plugin would load a private copy with its own types.
        var targets = XDocument.Load(Path.Combine(TestPaths.RepoRoot, "src", "SensMerging.Abstractions", "build", "SensMerging.Abstractions.targets"));
        var condition = targets.Descendants().Where(e => e.Name.LocalName == "_SmShared").Select(e => (string?)e.Attribute("Condition")).Single()!;
        foreach (var name in shared)
        {
            var covered = condition.Contains($"== '{name}'", StringComparison.Ordinal)
                || condition.Split("StartsWith('").Skip(1).Select(part => part[..part.IndexOf('\'', StringComparison.Ordinal)]).Any(prefix => name.StartsWith(prefix, StringComparison.Ordinal));
            Assert.True(covered, $"{name} is shared by the host but SensMerging.Abstractions.targets would copy it into plugin folders");
        }
    }
}

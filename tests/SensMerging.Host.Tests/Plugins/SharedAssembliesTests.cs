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

        // The contract's build writes its package closure (the list its build targets keep out of plugin folders);
        // every assembly the host shares must be in it, or a plugin would load a private copy with its own types.
        var generated = Path.Combine(TestPaths.RepoRoot, "src", "SensMerging.Abstractions", "build", "SensMerging.Abstractions.shared-packages.txt");
        var packages = File.ReadAllLines(generated).Where(l => l.Length > 0).ToHashSet(StringComparer.Ordinal);
        foreach (var name in shared)
        {
            Assert.True(packages.Contains(name), $"{name} is shared by the host but not in {generated}, so plugin builds would copy it");
        }
        // ... and it is the closure, not just the direct references: TorchSharp's own dependencies are in it too.
        Assert.Contains("Google.Protobuf", packages);
        Assert.Contains("SkiaSharp", packages);
    }
}

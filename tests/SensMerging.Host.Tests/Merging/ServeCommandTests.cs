using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Hub.Client;

namespace SensMerging.Host.Tests.Merging;

/// <summary><c>sensmerge serve</c> exposes the registry's merged models (and a folder of repositories) over the Hub protocol.</summary>
public sealed class ServeCommandTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("serve");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    [Fact]
    public async Task Merged_models_are_pulled_back_through_the_Hub_client_with_their_recorded_hashes()
    {
        var repos = Path.Combine(_root, "repos");
        var models = Path.Combine(repos, "zoo");
        var weights = TinyModels.Write(Path.Combine(models, "base"), 1);
        TinyModels.Write(Path.Combine(models, "a"), 2, weights);
        var config = Path.Combine(_root, "ta.yaml");
        File.WriteAllText(config, $"merge_method: task_arithmetic\nbase_model: {models}/base\nmodels:\n  - model: {models}/a\n");
        var registry = Path.Combine(_root, "merges.db");
        var plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("merge", config, "--out", Path.Combine(_root, "out"), "--plugins", plugins, "--registry", registry);
        Assert.True(exit == 0, stderr + stdout);
        var id = stdout.Split("registry id ")[1].Trim();

        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { TestPaths.HostDll, "serve", "--urls", "http://127.0.0.1:0", "--repos", repos, "--registry", registry, "--plugins", plugins })
        {
            start.ArgumentList.Add(a);
        }
        using var server = Process.Start(start)!;
        try
        {
            var line = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) ?? throw new InvalidOperationException(await server.StandardError.ReadToEndAsync());
            var endpoint = line.Split(' ')[2];
            Assert.StartsWith("http://127.0.0.1:", endpoint, StringComparison.Ordinal);

            var services = new ServiceCollection().AddHubClient(new HubOptions { Endpoint = endpoint, CacheDirectory = Path.Combine(_root, "cache") }).BuildServiceProvider();
            var cache = services.GetRequiredService<HubCache>();
            var snapshot = await cache.PullAsync($"merges/{id}");
            var merged = Path.Combine(snapshot.SnapshotDirectory, "model.safetensors");
            Assert.Equal(File.ReadAllBytes(Path.Combine(_root, "out", "model.safetensors")), File.ReadAllBytes(merged));
            Assert.Contains(id, File.ReadAllText(Path.Combine(snapshot.SnapshotDirectory, "README.md")), StringComparison.Ordinal);

            // The folder repositories are served beside them.
            var folderRepo = await cache.PullAsync("zoo/base");
            Assert.Equal(
                Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(models, "base", "model.safetensors")))),
                Assert.Single(folderRepo.Files, f => f.Path == "model.safetensors").Etag);
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }
    }
}

using System.Diagnostics;
using System.Text.Json;
using SensMerging.Registry;
using SensMerging.Registry.Remote;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// A team's shared registry: <c>sensmerge serve --tokens</c> keeps the LiteDB file and other processes record their merges
/// through <c>--registry http://host:port</c>.
/// </summary>
public sealed class SharedRegistryTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("shared-registry");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private async Task<(Process Server, string Endpoint, string Write, string Read)> StartServerAsync(string plugins, int leaseSeconds)
    {
        var tokens = Path.Combine(_root, "tokens.json");
        var (_, wout, _) = await Processes.SensMergeAsync("tokens", "create", "alice", "--scope", "write", "--file", tokens);
        var (_, rout, _) = await Processes.SensMergeAsync("tokens", "create", "ci", "--scope", "read", "--file", tokens);
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { TestPaths.HostDll, "serve", "--urls", "http://127.0.0.1:0", "--tokens", tokens, "--registry-lease", leaseSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
                     "--registry", Path.Combine(_root, "server", "merges.db"), "--plugins", plugins })
        {
            start.ArgumentList.Add(a);
        }

        var server = Process.Start(start)!;
        var line = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) ?? throw new InvalidOperationException(await server.StandardError.ReadToEndAsync());
        return (server, line.Split(' ')[2], wout.TrimEnd().Split('\n')[^1].Trim(), rout.TrimEnd().Split('\n')[^1].Trim());
    }

    [Fact]
    public async Task Two_clients_recording_merges_at_once_on_one_remote_registry_lose_none()
    {
        var plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");
        var models = Path.Combine(_root, "zoo");
        var weights = TinyModels.Write(Path.Combine(models, "base"), 1);
        TinyModels.Write(Path.Combine(models, "a"), 2, weights);
        TinyModels.Write(Path.Combine(models, "b"), 3, weights);
        var (server, endpoint, write, read) = await StartServerAsync(plugins, leaseSeconds: 30);
        try
        {
            var env = new Dictionary<string, string> { ["HF_TOKEN"] = write, ["SENSMERGE_REGISTRY"] = endpoint };
            var runs = new[] { "a", "b" }.Select(async expert =>
            {
                var config = Path.Combine(_root, $"{expert}.yaml");
                await File.WriteAllTextAsync(config, $"merge_method: task_arithmetic\nbase_model: {models}/base\nmodels:\n  - model: {models}/{expert}\n");
                return await Processes.RunAsync("dotnet", [TestPaths.HostDll, "merge", config, "--out", Path.Combine(_root, "out-" + expert), "--plugins", plugins], environment: env);
            }).ToList();
            var results = await Task.WhenAll(runs);
            var ids = new List<string>();
            foreach (var (exit, stdout, stderr) in results)
            {
                Assert.True(exit == 0, stderr + stdout);
                ids.Add(stdout.Split("registry id ")[1].Trim());
            }

            Assert.NotEqual(ids[0], ids[1]);

            // A reader (read token) sees both, succeeded, through the same API the CLI uses.
            var (lexit, list, lerr) = await Processes.RunAsync("dotnet", [TestPaths.HostDll, "registry", "list", "--json", "--registry", endpoint, "--plugins", plugins],
                environment: new Dictionary<string, string> { ["HF_TOKEN"] = read });
            Assert.True(lexit == 0, lerr + list);
            using var doc = JsonDocument.Parse(list);
            var listed = doc.RootElement.EnumerateArray().ToDictionary(e => e.GetProperty("id").GetString()!, e => e.GetProperty("status").GetString());
            Assert.Equal(2, listed.Count);
            Assert.All(ids, id => Assert.Equal("succeeded", listed[id]));

            // A read token may not record a merge.
            using var readOnly = new RemoteMergeRegistry(new Uri(endpoint), read);
            var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => readOnly.BeginAsync(new MergeRecord { ConfigText = "x" }));
            Assert.Contains("read scope", refused.Message, StringComparison.Ordinal);
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task A_client_that_stops_renewing_its_lease_leaves_its_record_failed_and_a_live_one_stays_running()
    {
        var plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");
        var (server, endpoint, write, _) = await StartServerAsync(plugins, leaseSeconds: 3);
        try
        {
            var dead = new RemoteMergeRegistry(new Uri(endpoint), write);
            var deadRecord = await dead.BeginAsync(new MergeRecord { ConfigText = "merge_method: linear\n", Tags = ["dies"] });
            dead.Dispose(); // the client is gone: nobody renews its lease

            using var live = new RemoteMergeRegistry(new Uri(endpoint), write); // renews every second: a third of the server's 3 s
            var liveRecord = await live.BeginAsync(new MergeRecord { ConfigText = "merge_method: linear\n", Tags = ["lives"] });
            Assert.Equal(MergeStatus.Running, liveRecord.Status);

            using var reader = new RemoteMergeRegistry(new Uri(endpoint), write);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            MergeRecord? seen = null;
            while (DateTime.UtcNow < deadline && (seen = await reader.GetAsync(deadRecord.Id))!.Status == MergeStatus.Running)
            {
                await Task.Delay(200);
            }

            Assert.Equal(MergeStatus.Failed, seen!.Status);
            Assert.Contains("lease", seen.Error!.Message, StringComparison.Ordinal);
            Assert.Equal(MergeStatus.Running, (await reader.GetAsync(liveRecord.Id))!.Status);

            // Updates go through (compare-and-swap on the record's version), and the live client closes its record.
            var tagged = await live.UpdateAsync(liveRecord.Id, r => r with { Tags = [.. r.Tags, "checked"] });
            Assert.Contains("checked", tagged.Tags);
            var cancelled = await live.CancelAsync(liveRecord.Id, "test over");
            Assert.Equal(MergeStatus.Cancelled, cancelled.Status);
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }
    }
}

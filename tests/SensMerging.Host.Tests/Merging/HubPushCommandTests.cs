using System.Diagnostics;
using System.Text.Json;

namespace SensMerging.Host.Tests.Merging;

/// <summary>
/// <c>sensmerge hub push</c> of a recorded merge into a running <c>sensmerge serve --tokens</c>, pulled back with
/// <c>sensmerge hub pull</c>: same bytes, and the merge's record names the repository and commit.
/// </summary>
public sealed class HubPushCommandTests : IDisposable
{
    private readonly string _root = TestPaths.NewTempDir("push");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private static Task<(int ExitCode, string StdOut, string StdErr)> SensMergeAsync(IDictionary<string, string> environment, params string[] args) =>
        Processes.RunAsync("dotnet", new[] { TestPaths.HostDll }.Concat(args), environment: environment);

    [Fact]
    public async Task A_recorded_merge_is_pushed_to_serve_pulled_back_identical_and_its_record_shows_the_repo_and_commit()
    {
        var models = Path.Combine(_root, "zoo");
        var weights = TinyModels.Write(Path.Combine(models, "base"), 1);
        TinyModels.Write(Path.Combine(models, "a"), 2, weights);
        var config = Path.Combine(_root, "ta.yaml");
        File.WriteAllText(config, $"merge_method: task_arithmetic\nbase_model: {models}/base\nmodels:\n  - model: {models}/a\n");
        var registry = Path.Combine(_root, "merges.db");
        var plugins = Path.Combine(TestPaths.RepoRoot, "plugins.json");
        var output = Path.Combine(_root, "out");
        var (exit, stdout, stderr) = await Processes.SensMergeAsync("merge", config, "--out", output, "--plugins", plugins, "--registry", registry);
        Assert.True(exit == 0, stderr + stdout);
        var id = stdout.Split("registry id ")[1].Trim();

        var tokens = Path.Combine(_root, "team", "tokens.json");
        var (wexit, wout, werr) = await Processes.SensMergeAsync("tokens", "create", "alice", "--scope", "write", "--file", tokens);
        Assert.True(wexit == 0, werr + wout);
        var writeToken = wout.TrimEnd().Split('\n')[^1].Trim();
        var (_, rout, _) = await Processes.SensMergeAsync("tokens", "create", "bob", "--scope", "read", "--file", tokens);
        var readToken = rout.TrimEnd().Split('\n')[^1].Trim();
        Assert.StartsWith("hf_", writeToken, StringComparison.Ordinal);
        Assert.DoesNotContain(writeToken, File.ReadAllText(tokens), StringComparison.Ordinal);
        var (_, list, _) = await Processes.SensMergeAsync("tokens", "list", "--file", tokens);
        Assert.Contains("alice\twrite", list, StringComparison.Ordinal);
        Assert.Contains("bob\tread", list, StringComparison.Ordinal);

        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { TestPaths.HostDll, "serve", "--urls", "http://127.0.0.1:0", "--no-registry", "--store", Path.Combine(_root, "team", "store"),
                     "--tokens", tokens, "--registry", Path.Combine(_root, "team", "server.db"), "--plugins", plugins })
        {
            start.ArgumentList.Add(a);
        }

        using var server = Process.Start(start)!;
        var serverErr = server.StandardError.ReadToEndAsync();
        try
        {
            var line = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60)) ?? throw new InvalidOperationException(await serverErr);
            var endpoint = line.Split(' ')[2];
            var cache = Path.Combine(_root, "cache");
            var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = endpoint, ["HF_TOKEN"] = readToken, ["HF_HUB_CACHE"] = cache };

            // A read token may not push.
            var (rexit, _, rerr) = await SensMergeAsync(env, "hub", "push", $"merges/{id}", "team/merged", "--registry", registry, "--plugins", plugins);
            Assert.Equal(1, rexit);
            Assert.Contains("read scope", rerr, StringComparison.Ordinal);
            Assert.DoesNotContain(readToken, rerr, StringComparison.Ordinal);

            env["HF_TOKEN"] = writeToken;
            var (pexit, pout, perr) = await SensMergeAsync(env, "hub", "push", $"merges/{id}", "team/merged", "--message", "first merge", "--registry", registry, "--plugins", plugins);
            Assert.True(pexit == 0, perr + pout);
            var commit = pout.TrimEnd().Split('\n')[^1].Split(" -> ")[1].Trim();
            Assert.Matches("^[0-9a-f]{40}$", commit);
            Assert.Contains("1 LFS objects uploaded", pout, StringComparison.Ordinal);

            // Pushed again (as after an interruption): nothing is sent twice.
            var (aexit, aout, aerr) = await SensMergeAsync(env, "hub", "push", output, "team/merged", "--revision", "again", "--registry", registry, "--plugins", plugins);
            Assert.True(aexit == 0, aerr + aout);
            Assert.Contains("0 LFS objects uploaded (0.0 MB), 1 already on the Hub", aout, StringComparison.Ordinal);

            var (lexit, lout, lerr) = await SensMergeAsync(env, "hub", "pull", $"team/merged@{commit}", "--registry", registry, "--plugins", plugins);
            Assert.True(lexit == 0, lerr + lout);
            var snapshot = lout.TrimEnd().Split('\n')[^1].Trim();
            Assert.StartsWith(cache, snapshot, StringComparison.Ordinal);
            var pushed = Directory.EnumerateFiles(output, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(output, f)).Order().ToList();
            Assert.Equal(pushed, Directory.EnumerateFiles(snapshot, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(snapshot, f)).Order().ToList());
            foreach (var file in pushed)
            {
                Assert.Equal(File.ReadAllBytes(Path.Combine(output, file)), File.ReadAllBytes(Path.Combine(snapshot, file)));
            }

            var (sexit, show, _) = await Processes.SensMergeAsync("registry", "show", id, "--registry", registry, "--plugins", plugins);
            Assert.Equal(0, sexit);
            Assert.Contains($"{endpoint}/team/merged@main -> {commit}", show, StringComparison.Ordinal);
            var (_, json, _) = await Processes.SensMergeAsync("registry", "export", id, "--registry", registry, "--plugins", plugins);
            using var doc = JsonDocument.Parse(json);
            var publication = Assert.Single(doc.RootElement.GetProperty("record").GetProperty("publications").EnumerateArray());
            Assert.Equal("team/merged", publication.GetProperty("repoId").GetString());
            Assert.Equal(commit, publication.GetProperty("commit").GetString());
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }

        Assert.DoesNotContain(writeToken, await serverErr, StringComparison.Ordinal);
    }
}

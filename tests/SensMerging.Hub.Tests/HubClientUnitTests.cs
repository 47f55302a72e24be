using SensMerging.Hub.Client;

namespace SensMerging.Hub.Tests;

public sealed class HubClientUnitTests
{
    [Theory]
    [InlineData("*.json", "config.json", true)]
    [InlineData("*.json", "sub/config.json", true)]
    [InlineData("*.safetensors", "model.safetensors.index.json", false)]
    [InlineData("model-0000?-of-00002.safetensors", "model-00001-of-00002.safetensors", true)]
    [InlineData("nested/**", "nested/dir/data.txt", true)]
    [InlineData("nested/", "nested/dir/data.txt", true)]
    [InlineData("nested/", "nestedx/a", false)]
    [InlineData("[ab]*.txt", "a1.txt", true)]
    [InlineData("[!ab]*.txt", "a1.txt", false)]
    [InlineData("[!ab]*.txt", "c1.txt", true)]
    [InlineData("[a-c].bin", "b.bin", true)]
    [InlineData("config.json", "config.json", true)]
    [InlineData("config.json", "configXjson", false)]
    [InlineData("a+b(c).txt", "a+b(c).txt", true)]
    public void Globs_match_like_fnmatch(string pattern, string path, bool expected) =>
        Assert.Equal(expected, new HubGlob(pattern).IsMatch(path));

    [Fact]
    public void Literal_globs_are_recognised()
    {
        Assert.True(new HubGlob("config.json").IsLiteral);
        Assert.False(new HubGlob("*.json").IsLiteral);
        Assert.False(new HubGlob("dir/").IsLiteral);
    }

    [Fact]
    public void Options_read_the_environment_in_the_official_order()
    {
        using var temp = new TempDir();
        var env = new Dictionary<string, string>
        {
            ["HF_ENDPOINT"] = "http://127.0.0.1:9999/",
            ["HF_HOME"] = Path.Combine(temp.Path, "home"),
            ["HF_HUB_OFFLINE"] = "1",
        };
        var o = HubOptions.FromEnvironment(n => env.GetValueOrDefault(n));
        Assert.Equal("http://127.0.0.1:9999", o.Endpoint);
        Assert.Equal(Path.Combine(temp.Path, "home", "hub"), o.CacheDirectory);
        Assert.True(o.Offline);
        Assert.Null(o.Token);

        Directory.CreateDirectory(Path.Combine(temp.Path, "home"));
        File.WriteAllText(Path.Combine(temp.Path, "home", "token"), "hf_fromfile\n");
        Assert.Equal("hf_fromfile", HubOptions.FromEnvironment(n => env.GetValueOrDefault(n)).Token);

        File.WriteAllText(Path.Combine(temp.Path, "other-token"), "hf_frompath");
        env["HF_TOKEN_PATH"] = Path.Combine(temp.Path, "other-token");
        Assert.Equal("hf_frompath", HubOptions.FromEnvironment(n => env.GetValueOrDefault(n)).Token);

        env["HUGGING_FACE_HUB_TOKEN"] = "hf_legacy";
        Assert.Equal("hf_legacy", HubOptions.FromEnvironment(n => env.GetValueOrDefault(n)).Token);
        env["HF_TOKEN"] = "hf_env";
        Assert.Equal("hf_env", HubOptions.FromEnvironment(n => env.GetValueOrDefault(n)).Token);

        env["HUGGINGFACE_HUB_CACHE"] = Path.Combine(temp.Path, "legacy-cache");
        Assert.Equal(Path.Combine(temp.Path, "legacy-cache"), HubOptions.FromEnvironment(n => env.GetValueOrDefault(n)).CacheDirectory);
        env["HF_HUB_CACHE"] = Path.Combine(temp.Path, "cache");
        var final = HubOptions.FromEnvironment(n => env.GetValueOrDefault(n));
        Assert.Equal(Path.Combine(temp.Path, "cache"), final.CacheDirectory);
        Assert.DoesNotContain("hf_env", final.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Options_default_to_xdg_and_the_official_endpoint()
    {
        var o = HubOptions.FromEnvironment(n => n == "XDG_CACHE_HOME" ? "/xdg" : null);
        Assert.Equal(HubOptions.DefaultEndpoint, o.Endpoint);
        Assert.Equal(Path.Combine("/xdg", "huggingface", "hub"), o.CacheDirectory);
        Assert.False(o.Offline);
        Assert.Throws<ArgumentException>(() => new HubOptions { Endpoint = "ftp://x" });
    }

    [Fact]
    public void Timeouts_come_from_the_environment_then_from_settings()
    {
        var defaults = HubOptions.FromEnvironment(_ => null);
        Assert.Equal(TimeSpan.FromSeconds(10), defaults.DownloadTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), defaults.EtagTimeout);

        var env = new Dictionary<string, string> { ["HF_HUB_DOWNLOAD_TIMEOUT"] = "2.5", ["HF_HUB_ETAG_TIMEOUT"] = "0" };
        var o = HubOptions.FromEnvironment(n => env.GetValueOrDefault(n));
        Assert.Equal(TimeSpan.FromSeconds(2.5), o.DownloadTimeout);
        Assert.Equal(TimeSpan.FromSeconds(10), o.EtagTimeout); // 0 means the default, as in huggingface_hub

        var settings = new Dictionary<string, string> { ["DownloadTimeout"] = "30", ["EtagTimeout"] = "00:01:00" };
        o.ApplySettings(k => settings.GetValueOrDefault(k));
        Assert.Equal(TimeSpan.FromSeconds(30), o.DownloadTimeout);
        Assert.Equal(TimeSpan.FromMinutes(1), o.EtagTimeout);
        o.ApplySettings(_ => null);
        Assert.Equal(TimeSpan.FromSeconds(30), o.DownloadTimeout);

        env["HF_HUB_DOWNLOAD_TIMEOUT"] = "soon";
        var bad = Assert.Throws<ArgumentException>(() => HubOptions.FromEnvironment(n => env.GetValueOrDefault(n)));
        Assert.Contains("HF_HUB_DOWNLOAD_TIMEOUT='soon'", bad.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => o.ApplySettings(k => k == "EtagTimeout" ? "-1" : null));
    }

    [Theory]
    [InlineData("acme/tiny", "models--acme--tiny")]
    [InlineData("gpt2", "models--gpt2")]
    public void Repo_ids_map_to_cache_folders(string id, string folder) => Assert.Equal(folder, HubRepoId.Parse(id).CacheFolderName);

    [Theory]
    [InlineData("a/b/c")]
    [InlineData("../x")]
    [InlineData("a--b/c")]
    [InlineData("a/b c")]
    [InlineData("")]
    public void Bad_repo_ids_are_rejected(string id) => Assert.Throws<ArgumentException>(() => HubRepoId.Parse(id));

    [Fact]
    public void Git_blob_sha1_matches_git()
    {
        // `printf 'hello\n' | git hash-object --stdin`
        Assert.Equal("ce013625030ba8dba906f756967f9e9ca394464a", HubHashing.GitBlobSha1("hello\n"u8));
        Assert.Equal("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391", HubHashing.GitBlobSha1([]));
    }
}

# schoolproxy logon feed — run as SYSTEM by the scheduled tasks install-task.ps1 registers (never by a user,
# never as a user's logon script): at a logon it tells the gateway who is at this PC's console; at a logoff
# it clears that. The secret it sends is in a folder only SYSTEM and Administrators can read.
param(
    [Parameter(Mandatory = $true)] [ValidateSet("logon", "logoff")] [string]$Event,
    [Parameter(Mandatory = $true)] [string]$Gateway      # identity.logon_feed.listen, e.g. http://10.0.0.1:9465
)
$ErrorActionPreference = "Stop"
$private = Join-Path $env:ProgramData "schoolproxy\private"
$lastUser = Join-Path $private "last-user.txt"   # who this PC last reported, for the logoff

function Send-Feed([string]$Path, [hashtable]$Body) {
    $secret = (Get-Content -Raw -LiteralPath (Join-Path $private "feed-secret.txt")).Trim()
    $json = $Body | ConvertTo-Json -Compress
    for ($try = 1; ; $try++) {
        try {
            Invoke-RestMethod -Method Post -Uri "$Gateway$Path" -Body $json -ContentType "application/json" `
                -Headers @{ Authorization = "Bearer $secret" } -TimeoutSec 5 -UseBasicParsing | Out-Null
            return
        } catch {
            # A refusal (4xx) will not change by asking again; the network coming up after a boot, or the
            # directory not answering (503), may.
            $status = 0
            if ($_.Exception.Response) { $status = [int]$_.Exception.Response.StatusCode }
            if (($status -ge 400 -and $status -lt 500) -or $try -ge 5) { throw }
            Start-Sleep -Seconds (10 * $try)
        }
    }
}

try {
    if ($Event -eq "logon") {
        # The user at the console as Windows knows it — never $env:USERNAME, which is SYSTEM here and
        # which a user could set for themselves in a script of their own.
        $user = $null
        for ($i = 0; $i -lt 30 -and -not $user; $i++) {
            $user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
            if (-not $user) { Start-Sleep -Seconds 2 }
        }
        if (-not $user) { throw "no user at the console" }
        $user = $user.Split("\")[-1]
        Send-Feed "/logon" @{ user = $user; device = $env:COMPUTERNAME }
        Set-Content -LiteralPath $lastUser -Value $user -Encoding UTF8
    } elseif (Test-Path -LiteralPath $lastUser) {
        $user = (Get-Content -Raw -LiteralPath $lastUser).Trim()
        Remove-Item -LiteralPath $lastUser -Force
        Send-Feed "/logoff" @{ user = $user }
    }
} catch {
    # Never in the user's way: the network manager finds the problem in the Application log.
    $id = if ($Event -eq "logon") { 9465 } else { 9466 }
    Write-EventLog -LogName Application -Source "schoolproxy" -EventId $id -EntryType Warning `
        -Message "schoolproxy logon feed ($Event) failed: $($_.Exception.Message)" -ErrorAction SilentlyContinue
}

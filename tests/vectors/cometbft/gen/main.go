// Command gen writes light-client values computed by CometBFT v0.38.25's own Go code, as one
// JSON document: results hashes (types.NewResults), header hashes (Header.Hash), vote sign
// bytes (VoteSignBytes) and validator set hashes, for the cases a live network of our
// application never shows (result data and gas, negative gas, rounds above 0, nil votes,
// unequal voting power, an empty last block id). tests/vectors/cometbft/record.py records the
// rest from a running network.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/crypto/ed25519"
	cmtproto "github.com/cometbft/cometbft/proto/tendermint/types"
	cmtversion "github.com/cometbft/cometbft/proto/tendermint/version"
	"github.com/cometbft/cometbft/types"
)

type result struct {
	Code      uint32 `json:"code"`
	Data      string `json:"data"`
	GasWanted int64  `json:"gas_wanted"`
	GasUsed   int64  `json:"gas_used"`
	Encoded   string `json:"encoded"`
}

type resultsCase struct {
	Results []result `json:"results"`
	Hash    string   `json:"hash"`
}

type voteCase struct {
	ChainID   string `json:"chain_id"`
	Height    int64  `json:"height"`
	Round     int32  `json:"round"`
	BlockID   any    `json:"block_id"`
	Timestamp string `json:"timestamp"`
	SignBytes string `json:"sign_bytes"`
}

type headerCase struct {
	Header *types.Header `json:"header"`
	Hash   string        `json:"hash"`
}

type validatorCase struct {
	Validators []*types.Validator `json:"validators"` // in CometBFT's order
	Hash       string             `json:"hash"`
}

func resultsOf(rs []*abci.ExecTxResult) resultsCase {
	abciResults := types.NewResults(rs)
	out := resultsCase{Hash: hex.EncodeToString(abciResults.Hash())}
	for _, r := range abciResults {
		bz, err := r.Marshal()
		if err != nil {
			panic(err)
		}
		out.Results = append(out.Results, result{r.Code, hex.EncodeToString(r.Data), r.GasWanted, r.GasUsed, hex.EncodeToString(bz)})
	}
	return out
}

func voteOf(chainID string, height int64, round int32, blockID types.BlockID, when time.Time) voteCase {
	vote := &cmtproto.Vote{Type: cmtproto.PrecommitType, Height: height, Round: round, BlockID: blockID.ToProto(), Timestamp: when,
		ValidatorAddress: bytes.Repeat([]byte{1}, 20), ValidatorIndex: 3, Extension: []byte("not signed")}
	return voteCase{chainID, height, round, blockID, when.Format(time.RFC3339Nano), hex.EncodeToString(types.VoteSignBytes(chainID, vote))}
}

func key(seed byte) ed25519.PubKey {
	return ed25519.GenPrivKeyFromSecret([]byte{seed}).PubKey().(ed25519.PubKey)
}

func main() {
	full := []*abci.ExecTxResult{
		{Code: 0, Log: "not hashed", Events: []abci.Event{{Type: "not.hashed"}}},
		{Code: 10, Data: []byte("some data"), GasWanted: 7, GasUsed: 5, Info: "not hashed", Codespace: "x"},
		{Code: 4294967295, GasWanted: -1, GasUsed: -9223372036854775808},
		{Code: 1, Data: bytes.Repeat([]byte{0xff}, 200), GasWanted: 9223372036854775807},
		{Code: 99},
	}
	results := []resultsCase{resultsOf(nil), resultsOf(full[:1]), resultsOf(full[1:2]), resultsOf(full)}

	when := time.Date(2026, 1, 2, 3, 4, 5, 6007, time.UTC)
	whole := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	before := time.Date(1960, 1, 1, 0, 0, 0, 1, time.UTC)
	blockID := types.BlockID{Hash: bytes.Repeat([]byte{0xaa}, 32), PartSetHeader: types.PartSetHeader{Total: 3, Hash: bytes.Repeat([]byte{0xbb}, 32)}}
	votes := []voteCase{
		voteOf("careledger-net-1", 12, 0, blockID, when),
		voteOf("careledger-net-1", 12, 3, blockID, whole),
		voteOf("careledger-net-1", 1, 0, types.BlockID{}, when), // a nil vote
		voteOf("c", 9223372036854775807, 2147483647, blockID, before),
	}

	header := &types.Header{
		Version: cmtversion.Consensus{Block: 11, App: 3}, ChainID: "careledger-net-1", Height: 7, Time: when,
		LastBlockID: blockID, LastCommitHash: bytes.Repeat([]byte{1}, 32), DataHash: bytes.Repeat([]byte{2}, 32),
		ValidatorsHash: bytes.Repeat([]byte{3}, 32), NextValidatorsHash: bytes.Repeat([]byte{4}, 32),
		ConsensusHash: bytes.Repeat([]byte{5}, 32), AppHash: []byte{6}, LastResultsHash: bytes.Repeat([]byte{7}, 32),
		EvidenceHash: bytes.Repeat([]byte{8}, 32), ProposerAddress: bytes.Repeat([]byte{9}, 20),
	}
	first := &types.Header{ // height 1: no last block, empty app hash, app version 0
		Version: cmtversion.Consensus{Block: 11}, ChainID: "c", Height: 1, Time: before,
		ValidatorsHash: bytes.Repeat([]byte{3}, 32), NextValidatorsHash: bytes.Repeat([]byte{3}, 32),
		ConsensusHash: bytes.Repeat([]byte{5}, 32), ProposerAddress: bytes.Repeat([]byte{9}, 20),
	}
	headers := []headerCase{{header, hex.EncodeToString(header.Hash())}, {first, hex.EncodeToString(first.Hash())}}

	set := types.NewValidatorSet([]*types.Validator{
		types.NewValidator(key(1), 10), types.NewValidator(key(2), 30), types.NewValidator(key(3), 10), types.NewValidator(key(4), 1),
	})
	validators := []validatorCase{{set.Validators, hex.EncodeToString(set.Hash())}}

	doc, err := json.MarshalIndent(map[string]any{
		"source":     "cometbft v0.38.25 Go code (tests/vectors/cometbft/gen/main.go)",
		"results":    results,
		"votes":      votes,
		"headers":    headers,
		"validators": validators,
	}, "", "  ")
	if err != nil {
		panic(err)
	}
	fmt.Println(string(doc))
}
